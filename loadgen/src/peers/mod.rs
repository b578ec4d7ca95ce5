//! The peers Tandem is measured against, spoken natively by the generator: ShareDB (its JSON
//! protocol, rich-text type: the same Quill-delta OT, run through the engine's `ClientDoc`)
//! and y-websocket (the Yjs sync protocol, with `yrs`). Users follow the same open-model
//! schedules and keystrokes as Tandem's, and are checked for convergence the same way: at the
//! end, fresh connections read each document from the server and every user's copy must
//! match it.
//!
//! What differs is said in the reports: presence is not driven on the peers (ShareDB's
//! presence and Yjs awareness are not Tandem's protocol), and y-websocket has no ack: the
//! echo of a user's own update, which the server sends to every connection of the room,
//! stands for it.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_engine::Delta;

use crate::scenario::Role;
use crate::user::{Thread, UserSpec};
use crate::wsclient::Sender;

pub(crate) mod sharedb;
pub(crate) mod yjs;

/// Which server the generator talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    /// Tandem's protocol v1 (`docs/protocol.md`).
    #[default]
    Tandem,
    /// ShareDB's JSON protocol, documents of the `rich-text` type in collection `docs`.
    ShareDb,
    /// The y-websocket sync protocol, one room per document.
    Yjs,
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tandem" => Ok(Self::Tandem),
            "sharedb" => Ok(Self::ShareDb),
            "yjs" | "y-websocket" => Ok(Self::Yjs),
            _ => Err(format!("{s:?}: expected tandem, sharedb or yjs")),
        }
    }
}

/// A peer user the common actor drives.
pub(crate) trait Editor {
    /// The document is loaded and edits can be made.
    fn ready(&self) -> bool;
    /// The document's length.
    fn len(&self) -> usize;
    /// Makes a keystroke edit due at `due`; false if it could not.
    fn edit(&mut self, thread: &Thread, delta: &Delta, due: Instant) -> bool;
}

/// Edits on the user's schedule until the steady stage ends (the same schedule and
/// keystrokes as Tandem's users; cursors are not driven on peers).
pub(crate) async fn act<E: Editor>(thread: Rc<Thread>, user: Rc<RefCell<E>>, sender: Rc<Sender>, spec: UserSpec) {
    if spec.role != Role::Editor {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let every = Duration::from_secs_f64(1.0 / spec.edit_rate);
    let mut next = spec.start_at + every.mul_f64(rng.random_range(0.0..1.0));
    let mut caret = 0usize;
    while !thread.stop_acting.get() && !sender.is_closed() {
        monoio::time::sleep_until(monoio::time::Instant::from_std(next)).await;
        if thread.stop_acting.get() {
            return;
        }
        let now = Instant::now();
        let mut u = user.borrow_mut();
        while next <= now {
            if u.ready() {
                let len = u.len();
                let d = crate::user::keystroke(&mut rng, &mut caret, len);
                if u.edit(&thread, &d, next) {
                    thread.stats.borrow_mut().edit(&thread.clock, next);
                }
            }
            next += every;
        }
    }
}

/// Closes the connection once the run is over.
pub(crate) async fn close_at_finish(thread: Rc<Thread>, sender: Rc<Sender>) {
    while !thread.finish.get() {
        monoio::time::sleep(Duration::from_millis(50)).await;
    }
    sender.close();
}
