//! An upstream's answer (status line, headers, body: any bytes) on a real loopback
//! socket, pulled through an edge by two viewers at once and a third after: nothing
//! panics, every answer ends, the viewers of one fill see the same answer.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::edge_upstream(data));
