//! Layer-4 listeners (tcp, tls, sni, udp).
