//! Worker threads: one per device (its kernels, in launch order, like a stream) and one for
//! prefetches. Started on first use; a `fork` child starts its own when it needs them.

use crate::device::MAX_DEVICES;
use crate::pal::lock::Lock;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

/// A unit of work.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// The queue of the prefetch worker (after the devices' queues).
pub(crate) const PREFETCH: usize = MAX_DEVICES;

struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
}

/// A worker's queue, with the process that started the worker (a `fork` child has none).
type Slot = Option<(u32, Arc<Queue>)>;

/// Each worker's slot. Held only to look a slot up or fill it (no allocation, no thread
/// start inside), and across `fork` ([`lock_for_fork`]), so a child finds it consistent.
static QUEUES: Lock<[Slot; MAX_DEVICES + 1]> = Lock::new([const { None }; MAX_DEVICES + 1]);

/// `fork` preparation: holds the worker table (see [`QUEUES`]).
pub(crate) fn lock_for_fork() {
    QUEUES.lock_for_fork();
}

/// Releases the table after `fork`.
///
/// # Safety
/// This thread (or, in a child, its copy) took it with [`lock_for_fork`].
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: forwarded contract.
    unsafe { QUEUES.unlock_after_fork() }
}

/// This process's queue of worker `which`, if it has started one.
fn queue(which: usize, pid: u32) -> Option<Arc<Queue>> {
    match &QUEUES.lock()[which] {
        Some((p, q)) if *p == pid => Some(q.clone()),
        _ => None,
    }
}

/// Runs `job` on worker `which` (a device number or [`PREFETCH`]) after the jobs before it.
pub(crate) fn submit(which: usize, job: Job) {
    let pid = std::process::id();
    let q = queue(which, pid).unwrap_or_else(|| {
        let q = Arc::new(Queue {
            jobs: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
        });
        let installed = {
            let mut all = QUEUES.lock();
            match &all[which] {
                // Another thread started this worker meanwhile: use it (ours is dropped).
                Some((p, other)) if *p == pid => Err(other.clone()),
                _ => {
                    all[which] = Some((pid, q.clone()));
                    Ok(())
                }
            }
        };
        match installed {
            Err(other) => other,
            Ok(()) => {
                let name = if which == PREFETCH {
                    "tieralloc-prefetch".to_string()
                } else {
                    format!("tieralloc-dev{which}")
                };
                let worker = q.clone();
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || serve(&worker))
                    .expect("tieralloc: could not start a device worker thread");
                q
            }
        }
    });
    q.jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push_back(job);
    q.ready.notify_one();
}

fn serve(q: &Queue) -> ! {
    // Everything this thread allocates (bookkeeping while it holds a kernel's pinned pages,
    // and the kernels' own scratch memory) stays off pages that hold user objects.
    crate::mem::scope::enter_internal();
    // A worker holds page locks and pins; signals are for the application's threads.
    crate::pal::signal::SignalsBlocked::forever();
    loop {
        let job = {
            let mut jobs = q.jobs.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(j) = jobs.pop_front() {
                    break j;
                }
                jobs = q.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
            }
        };
        job();
    }
}

/// A result one thread sets once and others wait for.
pub(crate) struct Completion<T> {
    value: Mutex<Option<T>>,
    done: Condvar,
}

impl<T> Completion<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Completion {
            value: Mutex::new(None),
            done: Condvar::new(),
        })
    }

    pub(crate) fn set(&self, v: T) {
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        self.done.notify_all();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.value
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    pub(crate) fn wait(&self) -> T {
        let mut v = self.value.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(x) = v.take() {
                return x;
            }
            v = self.done.wait(v).unwrap_or_else(|e| e.into_inner());
        }
    }
}
