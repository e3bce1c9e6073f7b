pub mod cert;
pub mod resolver;
