//! Pictures of residency: the residency map of a range (SVG and text, shaded by the access
//! counters) and the timeline of a trace (SVG). Never called on the fault path.

use crate::api::residency::{residency, PageState};
use crate::base::error::Error;
use crate::pal::sys::PAGE_SIZE;
use core::fmt::Write as _;

/// Largest number of cells in a map; larger ranges put several pages in a cell.
const MAX_CELLS: usize = 4096;
/// Cells per row.
const COLUMNS: usize = 64;
/// Device colours, by device number (cycled).
const DEVICE_COLOURS: [(u8, u8, u8); 8] = [
    (0xe6, 0x6f, 0x00),
    (0x2c, 0xa0, 0x2c),
    (0x94, 0x67, 0xbd),
    (0xd6, 0x27, 0x28),
    (0x8c, 0x56, 0x4b),
    (0xe3, 0x77, 0xc2),
    (0xbc, 0xbd, 0x22),
    (0x17, 0xbe, 0xcf),
];
const HOST_COLOUR: (u8, u8, u8) = (0x1f, 0x77, 0xb4);
const FREE_COLOUR: (u8, u8, u8) = (0xee, 0xee, 0xee);
const MIGRATING_COLOUR: (u8, u8, u8) = (0xff, 0xd7, 0x00);

fn device_colour(d: u16) -> (u8, u8, u8) {
    DEVICE_COLOURS[d as usize % DEVICE_COLOURS.len()]
}

fn colour_of(s: PageState) -> (u8, u8, u8) {
    match s {
        PageState::Free => FREE_COLOUR,
        PageState::Host | PageState::Duplicated(_) => HOST_COLOUR,
        PageState::Device(d) => device_colour(d),
        PageState::Migrating => MIGRATING_COLOUR,
    }
}

/// `c` mixed with white: `heat` 1 keeps the colour, 0 makes it pale.
fn shade((r, g, b): (u8, u8, u8), heat: f32) -> String {
    let k = 0.35 + 0.65 * heat.clamp(0.0, 1.0);
    let mix = |c: u8| (255.0 - (255.0 - c as f32) * k).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(r), mix(g), mix(b))
}

fn label(s: PageState) -> String {
    match s {
        PageState::Free => "free".into(),
        PageState::Host => "host".into(),
        PageState::Device(d) => format!("device {d}"),
        PageState::Duplicated(d) => format!("host + read-only copy on device {d}"),
        PageState::Migrating => "migrating".into(),
    }
}

/// One cell of a [`ResidencyMap`]: a page, or a group of pages for large ranges.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let v = vec![0u8; 4 << 20];
/// let map = tieralloc::residency_map(v.as_ptr(), v.len())?;
/// let hot = map.cells().iter().filter(|c| c.heat > 0.5).count();
/// println!("{hot} hot cells of {}", map.cells().len());
/// # Ok::<(), tieralloc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct MapCell {
    /// The state of most of the cell's pages.
    pub state: PageState,
    /// How hot the cell's 64 KiB blocks are, from 0 (unused) to 1 (the hottest in the map):
    /// device accesses plus CPU faults, relative to the map's maximum.
    pub heat: f32,
}

/// A picture of which pages of a range live where, with hot/cold shading from the access
/// counters. Render it with [`svg`](ResidencyMap::svg) or [`text`](ResidencyMap::text).
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let v = vec![1u8; 1 << 20];
/// tieralloc::migrate(v.as_ptr(), 1 << 19, tieralloc::Tier::Device(0))?;
/// print!("{}", tieralloc::residency_map(v.as_ptr(), v.len())?.text());
/// # Ok::<(), tieralloc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ResidencyMap {
    /// First byte of the range.
    start: usize,
    /// Length of the range.
    len: usize,
    /// Pages per cell.
    pages_per_cell: usize,
    /// The cells, in address order.
    cells: Vec<MapCell>,
}

/// Takes a [`ResidencyMap`] of `[ptr, ptr + len)`: one cell per page (or per group of pages,
/// so that a map has at most 4096 cells). Same errors as [`crate::residency`].
///
/// ```
/// use tieralloc::{Tier, TierAlloc};
/// #[global_allocator]
/// static A: TierAlloc = TierAlloc::new();
///
/// let v = vec![1u8; 64 << 10];
/// tieralloc::migrate(v[32 << 10..].as_ptr(), 32 << 10, Tier::Device(0)).unwrap();
/// let map = tieralloc::residency_map(v.as_ptr(), v.len()).unwrap();
/// assert!(map.text().contains("00000000")); // eight device-0 pages in a row
/// assert!(map.svg().starts_with("<svg"));
/// ```
pub fn residency_map(ptr: *const u8, len: usize) -> Result<ResidencyMap, Error> {
    let r = residency(ptr, len)?;
    let start = ptr as usize;
    let first_page = start & !(PAGE_SIZE - 1);
    let pages = (start + len - first_page).div_ceil(PAGE_SIZE);
    let per = pages.div_ceil(MAX_CELLS);
    let heat_of = |addr: usize| {
        r.blocks()
            .iter()
            .find(|b| b.range.contains(&addr))
            .map_or(0, |b| b.device_accesses + b.cpu_faults)
    };
    let max_heat = r
        .blocks()
        .iter()
        .map(|b| b.device_accesses + b.cpu_faults)
        .max()
        .unwrap_or(0)
        .max(1) as f32;
    let mut cells = Vec::with_capacity(pages.div_ceil(per));
    let mut run = r.runs().iter().peekable();
    let mut states: Vec<(PageState, usize)> = Vec::new();
    let mut c = 0;
    while c * per < pages {
        states.clear();
        let mut hottest = 0;
        for p in c * per..((c + 1) * per).min(pages) {
            let addr = (first_page + p * PAGE_SIZE).max(start);
            while run.peek().is_some_and(|(range, _)| range.end <= addr) {
                run.next();
            }
            let s = run.peek().map_or(PageState::Free, |(_, s)| *s);
            match states.iter_mut().find(|(x, _)| *x == s) {
                Some((_, n)) => *n += 1,
                None => states.push((s, 1)),
            }
            hottest = hottest.max(heat_of(addr));
        }
        let state = states
            .iter()
            .max_by_key(|(_, n)| *n)
            .map_or(PageState::Free, |(s, _)| *s);
        cells.push(MapCell {
            state,
            heat: hottest as f32 / max_heat,
        });
        c += 1;
    }
    Ok(ResidencyMap {
        start,
        len,
        pages_per_cell: per,
        cells,
    })
}

impl ResidencyMap {
    /// The cells, in address order.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![0u8; 5 * 4096];
    /// let map = tieralloc::residency_map(v.as_ptr(), v.len()).unwrap();
    /// assert!(map.cells().iter().all(|c| c.state == tieralloc::PageState::Host));
    /// ```
    pub fn cells(&self) -> &[MapCell] {
        &self.cells
    }

    /// Pages each cell stands for (1 unless the range has more than 4096 pages).
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![0u8; 64 << 20]; // 16384 pages
    /// assert_eq!(tieralloc::residency_map(v.as_ptr(), v.len()).unwrap().pages_per_cell(), 4);
    /// ```
    pub fn pages_per_cell(&self) -> usize {
        self.pages_per_cell
    }

    /// A compact text form: per row of 64 cells, the address offset, one character per cell
    /// for the state (`h` host, `0`-`9`/`A`-`F` device, `r` host with a read-only device copy,
    /// `~` migrating, `.` free), then the heat of the same cells (` .:-=+*#%@`, cold to hot).
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![0u8; 3 * 4096];
    /// let text = tieralloc::residency_map(v.as_ptr(), v.len()).unwrap().text();
    /// assert!(text.lines().any(|l| l.contains("hhh")));
    /// ```
    pub fn text(&self) -> String {
        const RAMP: &[u8] = b" .:-=+*#%@";
        let mut out = format!(
            "residency of {:#x} + {} bytes, {} KiB per cell: h host, 0-F device, r read-only copy, \
             ~ migrating, . free | heat ' .:-=+*#%@'\n",
            self.start,
            self.len,
            self.pages_per_cell * PAGE_SIZE / 1024
        );
        for (row, cells) in self.cells.chunks(COLUMNS).enumerate() {
            let offset = row * COLUMNS * self.pages_per_cell * PAGE_SIZE;
            let _ = write!(out, "{offset:>#12x} ");
            for c in cells {
                out.push(match c.state {
                    PageState::Free => '.',
                    PageState::Host => 'h',
                    PageState::Duplicated(_) => 'r',
                    PageState::Migrating => '~',
                    PageState::Device(d) => {
                        char::from_digit(d as u32 % 16, 16).map_or('?', |c| c.to_ascii_uppercase())
                    }
                });
            }
            out.push_str(&" ".repeat(COLUMNS - cells.len() + 1));
            for c in cells {
                let i = (c.heat * (RAMP.len() - 1) as f32).round() as usize;
                out.push(RAMP[i.min(RAMP.len() - 1)] as char);
            }
            out.push('\n');
        }
        out
    }

    /// An SVG picture: a square per cell (runs of equal cells drawn as one bar), coloured by where it lives (host blue, each device
    /// its own colour, free grey, migrating yellow), pale when cold and saturated when hot; a
    /// legend below.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![0u8; 8 * 4096];
    /// let svg = tieralloc::residency_map(v.as_ptr(), v.len()).unwrap().svg();
    /// assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    /// ```
    pub fn svg(&self) -> String {
        const CELL: usize = 12;
        let rows = self.cells.len().div_ceil(COLUMNS).max(1);
        let (w, top) = (COLUMNS * CELL + 20, 40);
        let mut legend: Vec<PageState> = Vec::new();
        for c in &self.cells {
            if !legend.contains(&c.state) {
                legend.push(c.state);
            }
        }
        let h = top + rows * CELL + 30 + 18 * (legend.len() + 1);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"10\" y=\"18\" font-size=\"14\">Residency of {:#x} + {} bytes \
             ({} KiB per square)</text>\n\
             <text x=\"10\" y=\"33\" fill=\"#555\">pale = cold, saturated = hot \
             (device accesses + CPU faults per 64 KiB block)</text>\n",
            self.start,
            self.len,
            self.pages_per_cell * PAGE_SIZE / 1024
        );
        // One rectangle per run of equal cells in a row keeps the file small.
        for (row, cells) in self.cells.chunks(COLUMNS).enumerate() {
            let mut i = 0;
            while i < cells.len() {
                let fill = shade(colour_of(cells[i].state), cells[i].heat);
                let dup = matches!(cells[i].state, PageState::Duplicated(_));
                let mut j = i + 1;
                while j < cells.len()
                    && cells[j].state == cells[i].state
                    && shade(colour_of(cells[j].state), cells[j].heat) == fill
                {
                    j += 1;
                }
                let _ = writeln!(
                    s,
                    "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\"{}/>",
                    10 + i * CELL,
                    top + row * CELL,
                    (j - i) * CELL - 1,
                    CELL - 1,
                    if dup {
                        " stroke=\"#e66f00\" stroke-width=\"2\""
                    } else {
                        ""
                    }
                );
                i = j;
            }
        }
        let mut y = top + rows * CELL + 24;
        for st in legend {
            let _ = writeln!(
                s,
                "<rect x=\"10\" y=\"{}\" width=\"11\" height=\"11\" fill=\"{}\"/>\
                 <text x=\"28\" y=\"{}\">{}</text>",
                y - 10,
                shade(colour_of(st), 1.0),
                y,
                label(st)
            );
            y += 18;
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes [`svg`](ResidencyMap::svg) to `path`.
    ///
    /// ```no_run
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![0u8; 1 << 20];
    /// tieralloc::residency_map(v.as_ptr(), v.len())?.write_svg("residency.svg")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_svg(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, self.svg())
    }
}

/// One parsed trace line.
struct Event {
    time_us: f64,
    addr: u64,
    bytes: u64,
    to: Option<u16>, // None = nowhere; Some(u16::MAX) = host; Some(d) = device d
}

fn parse_place(s: &str) -> Option<Option<u16>> {
    match s {
        "none" => Some(None),
        "host" => Some(Some(u16::MAX)),
        d => d.strip_prefix("dev")?.parse().ok().map(Some),
    }
}

fn parse_event(line: &str) -> Result<Event, &'static str> {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() != 6 {
        return Err("expected 6 comma-separated fields");
    }
    let time_us = f[0].parse().map_err(|_| "bad time")?;
    let addr = u64::from_str_radix(f[1].trim_start_matches("0x"), 16).map_err(|_| "bad addr")?;
    let bytes = f[2].parse().map_err(|_| "bad byte count")?;
    parse_place(f[3]).ok_or("bad 'from' (host, devN or none)")?;
    let to = parse_place(f[4]).ok_or("bad 'to' (host, devN or none)")?;
    Ok(Event {
        time_us,
        addr,
        bytes,
        to,
    })
}

/// Renders a trace (the CSV `TIERALLOC_TRACE` writes) as an SVG timeline: time to the right,
/// addresses downwards (the span the trace touched, in up to 256 bands), each band coloured by
/// where its memory lived at each moment. This is what the `tieralloc-view` example does.
///
/// ```
/// let csv = "time_us,addr,bytes,from,to,cause\n\
///            10.0,0x10000,65536,host,dev0,migrate\n\
///            250.5,0x10000,4096,dev0,host,fault\n";
/// let svg = tieralloc::trace::timeline_svg(csv)?;
/// assert!(svg.contains("device 0"));
/// assert!(tieralloc::trace::timeline_svg("time_us\nnot,an,event").is_err());
/// # Ok::<(), tieralloc::Error>(())
/// ```
pub fn timeline_svg(csv: &str) -> Result<String, Error> {
    let mut events = Vec::new();
    for (i, line) in csv.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("time_us") {
            continue;
        }
        events.push(parse_event(line).map_err(|why| Error::BadTrace { line: i + 1, why })?);
    }
    let lo = events.iter().map(|e| e.addr).min().unwrap_or(0);
    let hi = events
        .iter()
        .map(|e| e.addr + e.bytes.max(1))
        .max()
        .unwrap_or(1);
    let end = events
        .iter()
        .map(|e| e.time_us)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let bands = (((hi - lo) / PAGE_SIZE as u64).max(1) as usize).min(256);
    let band = (hi - lo).div_ceil(bands as u64).max(1);
    let (left, top, width, band_h) = (90.0, 40.0, 900.0, (512 / bands).clamp(2, 24) as f64);
    let x = |t: f64| left + t / end * width;
    // Per band: where it is now (None: unknown or nowhere) and since when.
    let mut state: Vec<(Option<u16>, f64)> = vec![(None, 0.0); bands];
    let mut rects = String::new();
    let mut seen: Vec<u16> = Vec::new();
    let mut close = |b: usize, place: Option<u16>, from: f64, to: f64, out: &mut String| {
        if let Some(p) = place {
            if !seen.contains(&p) {
                seen.push(p);
            }
            let colour = if p == u16::MAX {
                HOST_COLOUR
            } else {
                device_colour(p)
            };
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
                x(from),
                top + b as f64 * band_h,
                (x(to) - x(from)).max(0.5),
                band_h - 0.5,
                shade(colour, 1.0)
            );
        }
    };
    for e in &events {
        let first = ((e.addr - lo) / band) as usize;
        let last = ((e.addr + e.bytes.max(1) - 1 - lo) / band) as usize;
        for (b, st) in state
            .iter_mut()
            .enumerate()
            .take(last.min(bands - 1) + 1)
            .skip(first)
        {
            close(b, st.0, st.1, e.time_us, &mut rects);
            *st = (e.to, e.time_us);
        }
    }
    for (b, st) in state.iter().enumerate() {
        close(b, st.0, st.1, end, &mut rects);
    }
    let h = top + bands as f64 * band_h + 50.0 + 18.0 * seen.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{h:.0}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"18\" font-size=\"14\">Residency over time: {} events, {:#x}..{:#x} \
         ({} KiB per band), {:.1} ms</text>\n",
        left + width + 20.0,
        events.len(),
        lo,
        hi,
        band / 1024,
        end / 1000.0
    );
    s.push_str(&rects);
    let axis_y = top + bands as f64 * band_h + 16.0;
    for k in 0..=4 {
        let t = end * k as f64 / 4.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{axis_y:.1}\" text-anchor=\"middle\">{:.1} ms</text>",
            x(t),
            t / 1000.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"{:.1}\">{:#x}</text><text x=\"10\" y=\"{:.1}\">{:#x}</text>",
        top + 10.0,
        lo,
        top + bands as f64 * band_h,
        hi
    );
    let mut y = axis_y + 22.0;
    for p in seen {
        let (colour, name) = if p == u16::MAX {
            (HOST_COLOUR, "host".to_string())
        } else {
            (device_colour(p), format!("device {p}"))
        };
        let _ = writeln!(
            s,
            "<rect x=\"10\" y=\"{:.1}\" width=\"11\" height=\"11\" fill=\"{}\"/>\
             <text x=\"28\" y=\"{y:.1}\">{name}</text>",
            y - 10.0,
            shade(colour, 1.0)
        );
        y += 18.0;
    }
    s.push_str("</svg>\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_bands_follow_the_events() {
        let csv = "time_us,addr,bytes,from,to,cause\n\
                   0.0,0x100000,1048576,none,host,place\n\
                   100.0,0x100000,524288,host,dev1,migrate\n\
                   # 3 events dropped (ring full)\n\
                   300.0,0x100000,4096,dev1,host,fault\n";
        let svg = timeline_svg(csv).unwrap();
        assert!(svg.contains("3 events"));
        assert!(svg.contains("device 1") && svg.contains(">host<"));
        // Host colour before the migration, device 1's after it.
        assert!(svg.contains(&shade(HOST_COLOUR, 1.0)));
        assert!(svg.contains(&shade(device_colour(1), 1.0)));
    }

    #[test]
    fn bad_traces_name_the_line() {
        for (csv, line) in [
            (
                "time_us,addr,bytes,from,to,cause\n1,0x0,4096,host,gpu,migrate",
                2,
            ),
            ("1,zz,4096,host,dev0,migrate", 1),
            ("\n\n1,0x0,4096,host", 3),
        ] {
            match timeline_svg(csv) {
                Err(Error::BadTrace { line: l, .. }) => assert_eq!(l, line, "{csv:?}"),
                other => panic!("{csv:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn shading_pales_cold_cells() {
        assert_eq!(shade((0, 0, 0), 1.0), "#000000");
        assert!(shade((0, 0, 0), 0.0) > shade((0, 0, 0), 0.5));
    }
}
