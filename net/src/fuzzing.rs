//! Entry points for the fuzz targets in `fuzz/` (compiled only with `--cfg fuzzing`).

use crate::wsconn::{Incoming, WsConn};

/// Feeds `chunks` to a server-side WebSocket connection as successive socket reads; returns
/// the number of messages that came out. Never panics, whatever the bytes.
pub fn ws_receive(chunks: &[&[u8]], max_message: usize) -> usize {
    let mut ws = WsConn::new(max_message, max_message);
    let mut messages = 0;
    for chunk in chunks {
        let result = ws.receive(chunk, |m| {
            if let Incoming::Binary(b) | Incoming::Text(b) = &m {
                assert!(b.len() <= max_message, "a message over the limit got through");
            }
            messages += 1;
        });
        let _ = ws.take_output();
        if result.is_err() || ws.is_closed() {
            break;
        }
    }
    messages
}
