//! Fuzzes the ClientHello parser that the `sni` listener runs on untrusted
//! bytes. Besides "never panics", it checks the promises the listener
//! relies on.
#![no_main]

use corral::proxy::l4::clienthello::{parse_client_hello, ClientHello, MAX_CLIENT_HELLO};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let result = parse_client_hello(data);
    if result == Ok(None) {
        // "Read more" must stop being the answer at the cap, or the
        // listener would wait for bytes it will never accept.
        assert!(
            data.len() < MAX_CLIENT_HELLO,
            "Ok(None) at {} bytes",
            data.len()
        );
    } else {
        // A final answer must not change when more bytes arrive.
        let mut longer = data.to_vec();
        longer.push(0x16);
        assert_eq!(parse_client_hello(&longer), result);
    }
    if let Ok(Some(ClientHello {
        server_name: Some(name),
        ..
    })) = &result
    {
        // Routes are matched against the normalised form.
        assert!(
            !name.is_empty() && name.is_ascii() && *name == name.to_ascii_lowercase(),
            "{name:?}"
        );
    }
});
