//! Building a core's monoio runtime, shared by the server and the load generator.
//!
//! io_uring where the kernel allows it, epoll otherwise (`MONOIO_FORCE_LEGACY_DRIVER=1`
//! forces epoll). The io_uring instance is set up with `IORING_SETUP_COOP_TASKRUN` and
//! `IORING_SETUP_TASKRUN_FLAG` (Linux 5.19) when the kernel takes them: without them, every
//! socket readiness event that lands while the thread is running user code is delivered by
//! interrupting that thread (an inter-processor interrupt, a VM exit on virtual machines), and
//! the waker pays for it. On the 2-core VM this was 39% of the *sending* process's CPU in the
//! fan-out benchmark (`perf`: `sock_def_readable` → `_raw_spin_unlock_irqrestore`). A core's
//! event loop enters the kernel on every turn anyway, so cooperative delivery costs no latency.

use std::io;

use crate::metrics::Driver;

/// A core's runtime: io_uring or epoll, with timers.
pub type Runtime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// How a runtime came to be what it is, for the start-up log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverChoice {
    /// The driver.
    pub driver: Driver,
    /// Why: a sentence for the log.
    pub why: &'static str,
}

/// Builds a runtime with an io_uring of `entries` submission entries (twice that for
/// completions), falling back to io_uring without cooperative task running on kernels older
/// than 5.19, and to epoll where io_uring is missing or forced off.
pub fn build(entries: u32) -> io::Result<(Runtime, DriverChoice)> {
    let forced = std::env::var("MONOIO_FORCE_LEGACY_DRIVER")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    if !monoio::utils::detect_uring() {
        let why = if forced {
            "MONOIO_FORCE_LEGACY_DRIVER is set"
        } else {
            "io_uring is unavailable here (old kernel, or blocked by seccomp)"
        };
        let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build()?;
        return Ok((rt, DriverChoice { driver: Driver::Epoll, why }));
    }
    let mut cooperative = io_uring::IoUring::builder();
    cooperative.setup_coop_taskrun().setup_taskrun_flag();
    let built = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(entries)
        .uring_builder(cooperative)
        .enable_timer()
        .build();
    match built {
        Ok(rt) => Ok((
            rt,
            DriverChoice {
                driver: Driver::IoUring,
                why: "the kernel supports every io_uring op used (cooperative task running)",
            },
        )),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let rt =
                monoio::RuntimeBuilder::<monoio::FusionDriver>::new().with_entries(entries).enable_timer().build()?;
            Ok((
                rt,
                DriverChoice {
                    driver: Driver::IoUring,
                    why: "the kernel supports every io_uring op used (without cooperative task running: kernel < 5.19)",
                },
            ))
        }
        Err(e) => Err(e),
    }
}
