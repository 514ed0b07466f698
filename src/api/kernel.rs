//! Emulated device execution: kernels (closures) that run on a device's worker thread against
//! the memory the CPU uses, addressed through the device's window.
//!
//! A kernel declares the slices it uses ([`KernelArgs`]: `&[T]` read, `&mut [T]` written, and
//! tuples of them) and receives views of the same data as the device sees it. Before it runs,
//! each argument is placed ("device faults"): by default pages that are not on the kernel's
//! device migrate there (a device fault per 64 KiB block); with `Advice::AccessedBy`, a
//! `PreferredLocation` elsewhere, or a thrash guard, the device reads them where they are
//! (remote access); `ReadMostly` data read by a kernel gets a read-only duplicate on the
//! device. While the kernel runs, its pages are **pinned**: a migration or free of them waits
//! until the kernel is done. What the CPU may do meanwhile follows the borrows:
//! - pages of a `&[T]` argument stay readable: a CPU read of one that sits on the device (by
//!   another thread, another kernel, or this kernel through another shared reference) gets a
//!   read-only host copy, which becomes an ordinary read-only duplicate when the kernel ends;
//! - pages of a `&mut [T]` argument are the kernel's alone (no safe code reaches them);
//! - a page an argument shares with other memory (a small `Vec` beside it, perhaps captured by
//!   the kernel) is not moved: it stays on the host, usable by the CPU, and the kernel's view
//!   reaches a copy staged in the device frame; when the kernel ends, the bytes of its written
//!   arguments are copied back into the host page, and no other byte.
//!
//! Launches are asynchronous and run in order per device, like a stream; [`Device::scope`]
//! borrows data for its launches the way `std::thread::scope` does and waits for all of them.

use crate::base::error::Error;
use crate::base::tier::Tier;
use crate::device as dev;
use crate::device::worker::{self, Completion};
use crate::fault::{self, Backend};
use crate::mem::arena;
use crate::mem::blocks;
use crate::mem::counters::COUNTERS;
use crate::mem::gate::{gate_enter, gate_exit};
use crate::mem::pagemap::{self, Use};
use crate::mem::scope;
use crate::pal::sys;
use crate::pal::uffd;
use crate::tiering::duplicate;
use crate::tiering::migrate;
use crate::tiering::policy::{self, BlockInfo, DeviceFault};
use core::marker::PhantomData;
use core::ops::Range;
use core::sync::atomic::Ordering;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAGE: usize = sys::PAGE_SIZE;

/// One argument range as a kernel declares it.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct ArgRange {
    addr: usize,
    len: usize,
    write: bool,
}

/// What a kernel takes: `&[T]` (read), `&mut [T]` (read and write), or a tuple of up to four
/// of them. `T: Copy + 'static`: device memory holds plain data. Each becomes, inside the kernel, a
/// slice of the same type over the data where the device reads it.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let (a, b) = (vec![1u32; 1024], vec![2u32; 1024]);
/// let mut out = vec![0u32; 1024];
/// // A tuple of slices: read `a` and `b`, write `out`.
/// tieralloc::device(0)?.run((&a[..], &b[..], &mut out[..]), |(a, b, out)| {
///     for i in 0..out.len() {
///         out[i] = a[i] + b[i];
///     }
/// })?;
/// assert!(out.iter().all(|&x| x == 3));
/// # Ok::<(), tieralloc::Error>(())
/// ```
pub trait KernelArgs: Send {
    /// The kernel's view of the arguments.
    type View<'k>;
    #[doc(hidden)]
    fn ranges(&self, out: &mut Vec<ArgRange>);
    /// # Safety
    /// `bases` yields, for each range, an address where its data is readable (and writable if
    /// declared so) for `'k`, holding the same bytes.
    #[doc(hidden)]
    unsafe fn view<'k>(self, bases: &mut dyn Iterator<Item = usize>) -> Self::View<'k>;
}

impl<T: Copy + Sync + 'static> KernelArgs for &[T] {
    type View<'k> = &'k [T];
    fn ranges(&self, out: &mut Vec<ArgRange>) {
        out.push(ArgRange {
            addr: self.as_ptr() as usize,
            len: size_of_val(*self),
            write: false,
        });
    }
    unsafe fn view<'k>(self, bases: &mut dyn Iterator<Item = usize>) -> &'k [T] {
        let base = bases.next().unwrap_or(self.as_ptr() as usize);
        // SAFETY: the caller guarantees `base` holds this slice's bytes, readable for 'k;
        // it has the slice's alignment: device windows are congruent with the managed range
        // modulo 2^29, the largest alignment a type can have (`device::ensure_init`).
        unsafe { core::slice::from_raw_parts(base as *const T, self.len()) }
    }
}

impl<T: Copy + Send + 'static> KernelArgs for &mut [T] {
    type View<'k> = &'k mut [T];
    fn ranges(&self, out: &mut Vec<ArgRange>) {
        out.push(ArgRange {
            addr: self.as_ptr() as usize,
            len: size_of_val(*self),
            write: true,
        });
    }
    unsafe fn view<'k>(self, bases: &mut dyn Iterator<Item = usize>) -> &'k mut [T] {
        let base = bases.next().unwrap_or(self.as_mut_ptr() as usize);
        // SAFETY: as for `&[T]`, and writable; the `&mut` argument is borrowed for the whole
        // launch, so nothing else reaches these bytes meanwhile.
        unsafe { core::slice::from_raw_parts_mut(base as *mut T, self.len()) }
    }
}

macro_rules! tuple_args {
    ($($a:ident),*) => {
        impl<$($a: KernelArgs),*> KernelArgs for ($($a,)*) {
            type View<'k> = ($($a::View<'k>,)*);
            #[allow(non_snake_case)]
            fn ranges(&self, out: &mut Vec<ArgRange>) {
                let ($($a,)*) = self;
                $($a.ranges(out);)*
            }
            #[allow(non_snake_case, clippy::unused_unit)]
            unsafe fn view<'k>(self, bases: &mut dyn Iterator<Item = usize>) -> Self::View<'k> {
                let ($($a,)*) = self;
                // SAFETY: forwarded from the caller, one range per element in order.
                unsafe { ($($a.view(bases),)*) }
            }
        }
    };
}

tuple_args!(A);
tuple_args!(A, B);
tuple_args!(A, B, C);
tuple_args!(A, B, C, D);

/// What a launch did.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let x = vec![1.0f64; 1 << 16]; // 512 KiB on the host
/// let mut s = vec![0.0f64; 1];
/// let r = tieralloc::device(0)?.run((&x[..], &mut s[..]), |(x, s)| s[0] = x.iter().sum())?;
/// assert!(r.device_faults >= 8); // x's 64 KiB blocks faulted over to the device
/// assert!(r.migrated_bytes >= 512 << 10);
/// # Ok::<(), tieralloc::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KernelReport {
    /// Device faults: 64 KiB blocks the kernel needed on its device that lived elsewhere.
    pub device_faults: usize,
    /// Bytes those faults migrated (or duplicated) to the device.
    pub migrated_bytes: usize,
    /// Bytes the kernel accessed remotely, where they were.
    pub remote_bytes: usize,
    /// Time spent running the kernel itself (placement excluded).
    pub run_time: Duration,
}

/// An emulated device: where kernels run. Get one with [`device`].
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let dev = tieralloc::device(0)?;
/// assert_eq!(dev.id(), 0);
/// assert!(tieralloc::device(99).is_err());
/// # Ok::<(), tieralloc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    id: u16,
}

/// The device with number `id`.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let x: Vec<f32> = (0..4096).map(|i| i as f32).collect();
/// let mut y = vec![1.0f32; 4096];
/// let dev = tieralloc::device(0)?;
/// dev.run((&x[..], &mut y[..]), |(x, y)| {
///     for (y, x) in y.iter_mut().zip(x) {
///         *y += 2.0 * x;
///     }
/// })?;
/// assert_eq!(y[10], 21.0); // the CPU reads the device's result (the pages fault back)
/// # Ok::<(), tieralloc::Error>(())
/// ```
pub fn device(id: u16) -> Result<Device, Error> {
    migrate::start_devices()?;
    dev::check(id)?;
    migrate::start_backend()?;
    Ok(Device { id })
}

impl Device {
    /// The device number (`Tier::Device(id)`).
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// assert_eq!(tieralloc::device(0)?.id(), 0);
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Runs `kernel` on this device with `args` and waits for it.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let mut v = vec![1u64; 1 << 12];
    /// let report = tieralloc::device(0)?.run(&mut v[..], |v| v.iter_mut().for_each(|x| *x *= 5))?;
    /// assert_eq!(v[0], 5);
    /// assert!(report.device_faults >= 1);
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn run<A, K>(&self, args: A, kernel: K) -> Result<KernelReport, Error>
    where
        A: KernelArgs,
        K: for<'k> FnOnce(A::View<'k>) + Send,
    {
        self.scope(|s| s.launch(args, kernel).wait())
    }

    /// Opens a stream on this device for launches that borrow from the caller: every launch
    /// made through it has finished when `scope` returns.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let x = vec![3u64; 1 << 16];
    /// let mut sum = vec![0u64; 1];
    /// let dev = tieralloc::device(0)?;
    /// dev.scope(|s| {
    ///     let k = s.launch((&x[..], &mut sum[..]), |(x, sum)| sum[0] = x.iter().sum());
    ///     // ... CPU work here overlaps with the kernel ...
    ///     k.wait()
    /// })?;
    /// assert_eq!(sum[0], 3 << 16);
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn scope<'env, F, R>(&self, f: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Stream<'scope, 'env>) -> R,
    {
        let stream = Stream {
            device: self.id,
            running: Arc::new(Running::default()),
            _scope: PhantomData,
            _env: PhantomData,
        };
        let r = catch_unwind(AssertUnwindSafe(|| f(&stream)));
        stream.running.wait_all();
        r.unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

/// Launches still running in a scope.
#[derive(Default)]
struct Running {
    count: std::sync::Mutex<usize>,
    idle: std::sync::Condvar,
}

impl Running {
    fn add(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }
    fn done(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.idle.notify_all();
    }
    fn wait_all(&self) {
        let mut c = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *c > 0 {
            c = self.idle.wait(c).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A device stream inside [`Device::scope`]: launches run in order on the device's worker.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let mut a = vec![0u8; 4096];
/// let mut b = vec![0u8; 4096];
/// tieralloc::device(0)?.scope(|s| {
///     let first = s.launch(&mut a[..], |a| a.fill(1));
///     let second = s.launch(&mut b[..], |b| b.fill(2)); // runs after `first`
///     first.wait().and(second.wait())
/// })?;
/// assert_eq!((a[0], b[0]), (1, 2));
/// # Ok::<(), tieralloc::Error>(())
/// ```
pub struct Stream<'scope, 'env: 'scope> {
    device: u16,
    running: Arc<Running>,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

/// A launched kernel. [`Launch::wait`] returns its report; the scope waits for it anyway.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let mut v = vec![0u32; 1 << 16];
/// tieralloc::device(0)?.scope(|s| {
///     let k = s.launch(&mut v[..], |v| v.fill(7));
///     let _ = k.is_done(); // poll without blocking
///     k.wait()
/// })?;
/// assert_eq!(v[100], 7);
/// # Ok::<(), tieralloc::Error>(())
/// ```
#[must_use = "wait() returns the kernel's errors"]
pub struct Launch<'scope> {
    done: Arc<Completion<Result<KernelReport, Error>>>,
    _scope: PhantomData<&'scope ()>,
}

impl Launch<'_> {
    /// Waits for the kernel. Errors: placing its arguments failed (`NotManaged`,
    /// `NotAllocated`, `DeviceFull` in strict mode, ...; the kernel did not run), or the
    /// kernel panicked (`KernelPanicked`).
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let stack = [0u8; 16]; // not managed memory: the launch is refused
    /// let r = tieralloc::device(0)?.scope(|s| s.launch(&stack[..], |_| {}).wait());
    /// assert!(matches!(r, Err(tieralloc::Error::NotManaged { .. })));
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn wait(self) -> Result<KernelReport, Error> {
        self.done.wait()
    }

    /// True once the kernel has finished.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![0u8; 4096];
    /// tieralloc::device(0)?.scope(|s| {
    ///     let k = s.launch(&v[..], |_| {});
    ///     while !k.is_done() {
    ///         std::thread::yield_now(); // CPU work could go here
    ///     }
    ///     k.wait()
    /// })?;
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn is_done(&self) -> bool {
        self.done.is_set()
    }
}

impl<'scope> Stream<'scope, '_> {
    /// Queues `kernel` with `args` on the device and returns at once.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let mut v = vec![1i32; 1 << 14];
    /// tieralloc::device(0)?.scope(|s| s.launch(&mut v[..], |v| v.iter_mut().for_each(|x| *x = -*x)).wait())?;
    /// assert_eq!(v[0], -1);
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn launch<A, K>(&'scope self, args: A, kernel: K) -> Launch<'scope>
    where
        A: KernelArgs + 'scope,
        K: for<'k> FnOnce(A::View<'k>) + Send + 'scope,
    {
        let done = Completion::new();
        let (result, running, d) = (done.clone(), self.running.clone(), self.device);
        running.add();
        let job: Box<dyn FnOnce() + Send + 'scope> = Box::new(move || {
            // The kernel's own panic is caught in `execute`; one of the user's policy (asked
            // while placing, with nothing locked) must not kill the worker and hang `scope`.
            let r = catch_unwind(AssertUnwindSafe(|| execute(d, args, kernel)))
                .unwrap_or(Err(Error::PolicyPanicked));
            result.set(r);
            running.done();
        });
        // SAFETY: the job borrows only for 'scope, and `Device::scope` does not return (or
        // unwind) before every job of its stream has run (`wait_all`), as std's scoped threads.
        let job: worker::Job = unsafe { core::mem::transmute(job) };
        worker::submit(d as usize, job);
        Launch {
            done,
            _scope: PhantomData,
        }
    }
}

/// How one run of pages is placed for a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// On the kernel's device (moved or duplicated there): viewed through its window.
    Local,
    /// Where it is, on the host: viewed at its own address.
    Remote,
}

/// One merged run of argument pages.
#[derive(Debug, Clone)]
struct Run {
    pages: Range<usize>,
    write: bool,
    place: Place,
    /// The byte ranges of the arguments in this run, and whether each is written.
    args: Vec<(Range<usize>, bool)>,
}

impl Run {
    /// True if no single argument of the run covers page `p` whole: the page holds other
    /// memory too (a neighbour the kernel may have captured, another thread's object). Such a
    /// page stays on the host, accessible to the CPU, while the kernel runs; a local view
    /// reaches a copy of it staged in the device frame ([`stage`], [`unstage`]).
    fn shared_edge(&self, p: usize) -> bool {
        let (a, b) = (arena::addr_of(p), arena::addr_of(p) + PAGE);
        !self.args.iter().any(|(r, _)| r.start <= a && b <= r.end)
    }
}

fn execute<A: KernelArgs, K: for<'k> FnOnce(A::View<'k>)>(
    d: u16,
    args: A,
    kernel: K,
) -> Result<KernelReport, Error> {
    let mut ranges = Vec::new();
    args.ranges(&mut ranges);
    let mut report = KernelReport::default();
    let runs = acquire(d, &ranges, &mut report)?;
    let bases: Vec<usize> = ranges
        .iter()
        .map(|r| {
            let run = runs
                .iter()
                .find(|run| r.len > 0 && run.pages.contains(&arena::page_of(r.addr)));
            match run {
                Some(run) if run.place == Place::Local => dev::window(d) + (r.addr - arena::base()),
                _ => r.addr,
            }
        })
        .collect();
    scope::set_in_kernel(true);
    let t = Instant::now();
    // SAFETY: every range's pages are pinned where `bases` points (acquire), with frames
    // present, until `release` below, which runs after the views are gone (the kernel is
    // higher-ranked over 'k, so it cannot keep them).
    let ran = catch_unwind(AssertUnwindSafe(|| {
        kernel(unsafe { args.view(&mut bases.into_iter()) })
    }));
    report.run_time = t.elapsed();
    scope::set_in_kernel(false);
    release(d, &runs);
    COUNTERS.kernels.fetch_add(1, Ordering::Relaxed);
    auto_migrate(d, &runs);
    match ran {
        Ok(()) => Ok(report),
        Err(_) => Err(Error::KernelPanicked { device: d }),
    }
}

/// Merges the argument ranges into runs of pages (sorted; overlapping ranges joined).
fn runs_of(ranges: &[ArgRange]) -> Result<Vec<Run>, Error> {
    let mut runs: Vec<Run> = Vec::new();
    for r in ranges.iter().filter(|r| r.len > 0) {
        let (first, n) = migrate::pages_of(r.addr as *const u8, r.len)?;
        if let Some(p) = (first..first + n).find(|&p| pagemap::get(p).use_() == Use::Free) {
            return Err(Error::NotAllocated {
                addr: arena::addr_of(p),
            });
        }
        runs.push(Run {
            pages: first..first + n,
            write: r.write,
            place: Place::Local,
            args: vec![(r.addr..r.addr + r.len, r.write)],
        });
    }
    runs.sort_by_key(|r| r.pages.start);
    let mut merged: Vec<Run> = Vec::new();
    for r in runs {
        match merged.last_mut() {
            Some(m) if r.pages.start < m.pages.end => {
                m.pages.end = m.pages.end.max(r.pages.end);
                m.write |= r.write;
                m.args.extend(r.args);
            }
            _ => merged.push(r),
        }
    }
    Ok(merged)
}

/// Decides where a run is read from: advice first, then the policy for each block that is not
/// on the device yet.
fn decide(d: u16, run: &Run) -> Place {
    let pages = run.pages.clone();
    let here = |p: usize| {
        let e = pagemap::get(p);
        e.device() == Some(d) || (e.dup() == Some(d) && !run.write)
    };
    if pages.clone().all(here) {
        return Place::Local;
    }
    let remote_advice = pages.clone().any(|p| {
        let e = pagemap::get(p);
        e.accessed_by(Tier::Device(d)) || matches!(e.preferred(), Some(t) if t != Tier::Device(d))
    });
    if remote_advice {
        return Place::Remote;
    }
    let policy = policy::current();
    let mut place = Place::Local;
    let mut p = pages.start;
    while p < pages.end {
        let block_end = (p - p % blocks::BLOCK_PAGES + blocks::BLOCK_PAGES).min(pages.end);
        if !(p..block_end).all(here) {
            match policy.on_device_fault(d, &BlockInfo::of_page(p)) {
                DeviceFault::Migrate => {}
                DeviceFault::Remote => place = Place::Remote,
                DeviceFault::Guard(t) => {
                    policy::guard(p, block_end - p, t);
                    COUNTERS.thrash_guards.fetch_add(1, Ordering::Relaxed);
                    place = Place::Remote;
                }
            }
        }
        p = block_end;
    }
    place
}

/// Places and pins every run (see the module docs). On error nothing stays pinned.
fn acquire(d: u16, ranges: &[ArgRange], report: &mut KernelReport) -> Result<Vec<Run>, Error> {
    let mut runs = runs_of(ranges)?;
    let keep: Vec<Range<usize>> = runs.iter().map(|r| r.pages.clone()).collect();
    let backend = migrate::start_backend()?;
    let needed: usize = keep.iter().map(|r| r.len()).sum();
    if needed > dev::capacity_pages(d) && runs.iter().all(|r| decide(d, r) == Place::Local) {
        return Err(Error::DeviceFull {
            device: d,
            needed: needed * PAGE,
            free: dev::free_pages(d) * PAGE,
        });
    }
    loop {
        for run in runs.iter_mut() {
            run.place = decide(d, run);
            let (addr, len) = (arena::addr_of(run.pages.start), run.pages.len() * PAGE);
            let to = match run.place {
                Place::Local => Tier::Device(d),
                Place::Remote => Tier::Host,
            };
            let faulted = count_faults(d, run);
            let m = crate::mem::trace::with_cause(crate::mem::trace::Cause::Kernel, || {
                if run.place == Place::Remote {
                    return migrate::migrate_keeping(addr as *const u8, len, to, &keep);
                }
                // Local: pages the arguments own move to the device; shared edge pages come
                // to the host (they are staged for the view, see `Run::shared_edge`).
                let mut total = migrate::Migrated::default();
                let mut p = run.pages.start;
                while p < run.pages.end {
                    let edge = run.shared_edge(p);
                    let mut q = p + 1;
                    while q < run.pages.end && run.shared_edge(q) == edge {
                        q += 1;
                    }
                    let tier = if edge { Tier::Host } else { to };
                    let (a, n) = (arena::addr_of(p), (q - p) * PAGE);
                    let m = migrate::migrate_keeping(a as *const u8, n, tier, &keep)?;
                    if !edge {
                        total.moved += m.moved;
                        total.never_touched += m.never_touched;
                    }
                    p = q;
                }
                Ok(total)
            })?;
            if run.place == Place::Local {
                report.device_faults += faulted;
                report.migrated_bytes += m.moved * PAGE;
                COUNTERS
                    .device_faults
                    .fetch_add(faulted as u64, Ordering::Relaxed);
                COUNTERS
                    .device_fault_pages
                    .fetch_add(m.moved as u64 + m.never_touched as u64, Ordering::Relaxed);
            } else {
                report.remote_bytes += len;
            }
        }
        // Pinning locks page entries: no fork may copy them half-done. The kernel itself runs
        // outside the fork gate (a fault it takes, or a migration it starts, enters the gate
        // again, and a fork waiting meanwhile would wait for it forever); a fork child clears
        // the pins it inherits, as it has no kernels.
        gate_enter();
        let pinned = pin_all(backend, d, &runs);
        gate_exit();
        if pinned {
            return Ok(runs);
        }
        // A CPU fault moved a page between placement and pinning: place again.
        std::thread::yield_now();
    }
}

/// Blocks of `run` with a page not on `d` (the device faults placing it locally costs).
fn count_faults(d: u16, run: &Run) -> usize {
    let mut n = 0;
    let mut p = run.pages.start;
    while p < run.pages.end {
        let end = (p - p % blocks::BLOCK_PAGES + blocks::BLOCK_PAGES).min(run.pages.end);
        n += usize::from((p..end).any(|q| {
            let e = pagemap::get(q);
            e.device() != Some(d) && e.dup() != Some(d)
        }));
        p = end;
    }
    n
}

/// Locks every page of `runs` in address order and checks it is where its run wants it; fixes
/// what the kernel needs (frames for never-touched pages, duplicates dropped or promoted for
/// writes, zero pages under remote views) and pins them. If a page moved meanwhile, unlocks
/// everything and returns false. A run's pages are only locked while this runs, and pinned
/// in one store each once ready: a CPU fault may change a pinned page (a read-only copy,
/// `fault_back::cpu_fault`), never a page that is only locked.
fn pin_all(backend: Backend, d: u16, runs: &[Run]) -> bool {
    for (i, run) in runs.iter().enumerate() {
        crate::pal::inject::stall(crate::pal::inject::Point::PinStall);
        let mut ok = true;
        let mut locked = run.pages.start;
        for p in run.pages.clone() {
            // A page freed meanwhile is not locked (the retry then reports it); nor is one
            // another kernel pins (that kernel may touch pages this one has locked already:
            // the retry waits for it without holding any).
            let Ok(Some(e)) = pagemap::lock_unless_pinned(p) else {
                ok = false;
                break;
            };
            locked = p + 1;
            let fits = match run.place {
                Place::Local if run.shared_edge(p) => e.device().is_none(),
                Place::Local => e.device() == Some(d) || e.dup() == Some(d),
                Place::Remote => e.device().is_none(),
            };
            if !fits {
                ok = false;
                break;
            }
        }
        if !ok {
            for q in run.pages.start..locked {
                pagemap::unlock(q, pagemap::get(q));
            }
            // Transparent-mode faults on these pages wait to be woken by whoever changes
            // them; no kernel end will come for them now.
            fault::wake_pages(run.pages.start, locked - run.pages.start);
            for r in &runs[..i] {
                unpin(r);
            }
            return false;
        }
        prepare_pinned(backend, d, run);
    }
    true
}

/// Readies a pinned run's pages for the kernel's view.
fn prepare_pinned(backend: Backend, d: u16, run: &Run) {
    let uffd = backend != Backend::Signal;
    for p in run.pages.clone() {
        let e = pagemap::get(p);
        if run.place == Place::Local && run.shared_edge(p) {
            if let Some(dd) = e.dup() {
                // Its frame on `dd` would be stale once the kernel or the CPU writes.
                duplicate::drop_locked(backend, p, 1, dd, true);
            }
            stage(backend, d, p);
            pagemap::pin(p, e.on_host(), !run.write);
            continue;
        }
        let next = match (run.place, e.device(), e.dup()) {
            // Never-touched device pages get a frame (the zero page), so the window reads
            // zeros there and a later fault-back carries what the kernel wrote.
            (Place::Local, Some(_), _) if !e.filled() => {
                if uffd && uffd::zeropage(dev::frame(d, p), PAGE, false).is_err() {
                    sys::fatal("could not give a never-touched device page a frame");
                }
                e.on_device(d, true)
            }
            (Place::Local, None, Some(_)) if run.write => {
                duplicate::promote_locked(backend, p, 1);
                e.on_device(d, true)
            }
            (Place::Remote, None, Some(dd)) if run.write => {
                duplicate::drop_locked(backend, p, 1, dd, true);
                e.on_host()
            }
            _ => e,
        };
        if uffd && run.place == Place::Remote {
            // A missing host page in a registered chunk would raise a userfault the kernel's
            // own pin would park: give it the zero page now.
            if uffd::zeropage(arena::addr_of(p), PAGE, false).is_err() {
                sys::fatal("could not map a missing host page for a device kernel");
            }
        }
        pagemap::pin(p, next, !run.write);
    }
}

/// Copies shared edge page `p` (pinned on the host) into its frame on device `d`, where the
/// kernel's view of the run reaches it. The host page stays the authoritative one: the CPU
/// keeps using it meanwhile (other memory shares it), and [`unstage`] brings back the bytes
/// of the kernel's written arguments.
fn stage(backend: Backend, d: u16, p: usize) {
    let (addr, frame) = (arena::addr_of(p), dev::frame(d, p));
    sys::discard(frame, PAGE);
    if backend == Backend::Signal {
        // SAFETY: the host page is accessible (host pages are unprotected unless locked, and
        // this one is pinned by us); the window is plain memory in this backend.
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, frame as *mut u8, PAGE) };
        return;
    }
    // A missing host page gets the zero page first, so the copy does not raise a userfault
    // that would wait for this page's pin.
    if uffd::zeropage(addr, PAGE, false).is_err() || uffd::copy(frame, addr, PAGE).is_err() {
        sys::fatal("could not stage a page shared with a kernel argument on its device");
    }
}

/// The kernel is done with staged edge page `p`: its written arguments' bytes in that page go
/// back to the host page (no other byte: the CPU may have changed those meanwhile), and the
/// frame is dropped.
fn unstage(d: u16, run: &Run, p: usize) {
    let (addr, frame) = (arena::addr_of(p), dev::frame(d, p));
    for (r, _) in run.args.iter().filter(|(_, w)| *w) {
        let (a, b) = (r.start.max(addr), r.end.min(addr + PAGE));
        if a < b {
            // SAFETY: `[a, b)` is part of a `&mut` argument the kernel borrowed exclusively,
            // inside this host page (accessible: host, pinned by us) and its staged frame.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    (frame + (a - addr)) as *const u8,
                    a as *mut u8,
                    b - a,
                )
            };
        }
    }
    sys::discard(frame, PAGE);
}

/// Unpins a run and wakes the CPU accesses that waited for it.
fn unpin(run: &Run) {
    for p in run.pages.clone() {
        pagemap::unpin(p);
    }
    fault::wake_pages(run.pages.start, run.pages.len());
}

/// The kernel is done: unpin and count the device's accesses.
fn release(d: u16, runs: &[Run]) {
    for run in runs {
        if run.place == Place::Local {
            for p in run.pages.clone().filter(|&p| run.shared_edge(p)) {
                unstage(d, run, p);
            }
        }
        unpin(run);
        blocks::device_used(run.pages.start, run.pages.len());
        if run.place == Place::Remote {
            COUNTERS
                .remote_pages
                .fetch_add(run.pages.len() as u64, Ordering::Relaxed);
        }
    }
    let _ = d;
}

/// Moves remotely read blocks the policy wants on the device now (access-counter migration:
/// `AccessedBy` blocks included, blocks with a `PreferredLocation` not).
fn auto_migrate(d: u16, runs: &[Run]) {
    let policy = policy::current();
    for run in runs.iter().filter(|r| r.place == Place::Remote) {
        let mut p = run.pages.start;
        while p < run.pages.end {
            let end = (p - p % blocks::BLOCK_PAGES + blocks::BLOCK_PAGES).min(run.pages.end);
            // An explicit preferred location wins over the counters.
            let pinned_elsewhere = (p..end).any(|q| pagemap::get(q).preferred().is_some());
            if !pinned_elsewhere && policy.auto_migrate(d, &BlockInfo::of_page(p)) {
                let _ = crate::mem::trace::with_cause(crate::mem::trace::Cause::Advice, || {
                    migrate::migrate(
                        arena::addr_of(p) as *const u8,
                        (end - p) * PAGE,
                        Tier::Device(d),
                    )
                });
            }
            p = end;
        }
    }
}
