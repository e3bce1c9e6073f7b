//! Byte counting on a client connection, for `corral_listener_bytes_{in,out}_total`.

use prometheus::IntCounter;

use crate::io::{Observed, Observer};

pub struct ByteCounters {
    bytes_in: IntCounter,
    bytes_out: IntCounter,
}

impl Observer for ByteCounters {
    fn on_read(&self, bytes: usize) {
        self.bytes_in.inc_by(bytes as u64);
    }
    fn on_write(&self, bytes: usize) {
        self.bytes_out.inc_by(bytes as u64);
    }
}

pub type CountingIo<T> = Observed<T, ByteCounters>;

/// `io`, counting what is read into `bytes_in` and what is written into `bytes_out`.
pub fn counting<T>(io: T, bytes_in: IntCounter, bytes_out: IntCounter) -> CountingIo<T> {
    Observed::new(
        io,
        ByteCounters {
            bytes_in,
            bytes_out,
        },
    )
}
