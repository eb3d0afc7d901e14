//! A viewer's request target through the node's real canonical path, access gate and
//! viewer router (handlers that answer with the channel they were given): the private
//! channel is never served to a request without its token.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::viewer_request(data));
