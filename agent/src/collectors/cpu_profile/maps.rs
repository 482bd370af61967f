//! `/proc/PID/maps` and `/proc/modules`, parsed into what symbolization needs.

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub executable: bool,
    /// Offset of `start` in the mapped file.
    pub offset: u64,
    /// `(major, minor)` of the device holding the file.
    pub dev: (u32, u32),
    pub inode: u64,
    /// The file (without a ` (deleted)` suffix), a pseudo name such as
    /// `[vdso]` or `[heap]`, or `None` for anonymous memory.
    pub path: Option<String>,
    /// The file was deleted (or replaced) after it was mapped.
    pub deleted: bool,
}

impl MapsEntry {
    /// Backed by a file (rather than `[vdso]`, `[heap]` or anonymous memory).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.as_deref().is_some_and(|p| p.starts_with('/'))
    }

    /// The name shown as a frame's module: the file's base name, the pseudo
    /// name, or `[anon]`.
    pub fn module(&self) -> String {
        match self.path.as_deref() {
            Some(p) if p.starts_with('/') => p.rsplit('/').next().unwrap_or(p).to_string(),
            Some(p) => p.to_string(),
            None => "[anon]".to_string(),
        }
    }
}

/// Parses one maps line; `None` for a malformed one.
pub fn parse_maps_line(line: &str) -> Option<MapsEntry> {
    // start-end perms offset major:minor inode [path]; the path may hold spaces.
    let mut rest = line;
    let mut field = || {
        let s = rest.trim_start_matches(' ');
        let end = s.find(' ').unwrap_or(s.len());
        let (f, r) = s.split_at(end);
        rest = r;
        f
    };
    let range = field();
    let perms = field();
    let offset = field();
    let dev = field();
    let inode = field();
    let path = rest.trim_start_matches(' ');

    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let (path, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    };
    Some(MapsEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        executable: perms.as_bytes().get(2) == Some(&b'x'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        inode: inode.parse().ok()?,
        path: (!path.is_empty()).then(|| path.to_string()),
        deleted,
    })
}

/// The executable mappings of `maps` (the text of a `/proc/PID/maps`), by
/// start address. Only code can appear in a stack.
pub fn executable_mappings(maps: &str) -> Vec<MapsEntry> {
    let mut out: Vec<MapsEntry> = maps
        .lines()
        .filter_map(parse_maps_line)
        .filter(|e| e.executable)
        .collect();
    out.sort_by_key(|e| e.start);
    out
}

/// A loaded kernel module's text, from `/proc/modules`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelModule {
    pub name: String,
    pub start: u64,
    pub end: u64,
}

/// Parses `/proc/modules` (`name size refcount deps state address`), by
/// start address. Addresses read as 0 without CAP_SYSLOG; such lines are dropped.
pub fn parse_modules(text: &str) -> Vec<KernelModule> {
    let mut out: Vec<KernelModule> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let name = f.first()?;
            let size: u64 = f.get(1)?.parse().ok()?;
            let addr = f.get(5)?.strip_prefix("0x")?;
            let start = u64::from_str_radix(addr, 16).ok()?;
            (start != 0).then(|| KernelModule {
                name: name.to_string(),
                start,
                end: start + size,
            })
        })
        .collect();
    out.sort_by_key(|m| m.start);
    out
}

/// The entry of `sorted` (by start) whose `[start, end)` holds `addr`.
pub fn find<T>(sorted: &[T], addr: u64, range: impl Fn(&T) -> (u64, u64)) -> Option<&T> {
    let i = sorted.partition_point(|t| range(t).0 <= addr);
    let candidate = sorted.get(i.checked_sub(1)?)?;
    let (start, end) = range(candidate);
    (start <= addr && addr < end).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a1e000 r--p 00000000 fd:01 1234                       /usr/bin/coral burn
55d0c0a1e000-55d0c0a90000 r-xp 0001e000 fd:01 1234                       /usr/bin/coral burn
55d0c1c00000-55d0c1c21000 rw-p 00000000 00:00 0                          [heap]
7f1e2a228000-7f1e2a3ad000 r-xp 00028000 103:02 5678                      /tmp/x/libc.so.6 (deleted)
7f1e2a600000-7f1e2a700000 rwxp 00000000 00:00 0 
7ffd5a5f2000-7ffd5a5f4000 r-xp 00000000 00:00 0                          [vdso]
";

    #[test]
    fn keeps_executable_mappings_with_their_files() {
        let m = executable_mappings(MAPS);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].path.as_deref(), Some("/usr/bin/coral burn"));
        assert_eq!((m[0].start, m[0].offset), (0x55d0c0a1e000, 0x1e000));
        assert_eq!(m[0].dev, (0xfd, 1));
        assert_eq!(m[0].module(), "coral burn");
        assert!(m[0].is_file());
        assert_eq!(m[1].path.as_deref(), Some("/tmp/x/libc.so.6"));
        assert!(m[1].deleted);
        assert_eq!(m[1].dev, (0x103, 2));
        assert_eq!(m[2].path, None);
        assert_eq!(m[2].module(), "[anon]");
        assert!(!m[2].is_file());
        assert_eq!(m[3].module(), "[vdso]");
        assert!(!m[3].is_file());
    }

    #[test]
    fn finds_the_mapping_holding_an_address() {
        let m = executable_mappings(MAPS);
        let range = |e: &MapsEntry| (e.start, e.end);
        assert_eq!(
            find(&m, 0x55d0c0a1e000, range).unwrap().start,
            0x55d0c0a1e000
        );
        assert_eq!(
            find(&m, 0x55d0c0a8ffff, range).unwrap().start,
            0x55d0c0a1e000
        );
        assert!(find(&m, 0x55d0c0a90000, range).is_none());
        assert!(find(&m, 0x1000, range).is_none());
        assert!(find(&m, u64::MAX, range).is_none());
    }

    #[test]
    fn modules_need_addresses() {
        let text = "ext4 1040384 1 - Live 0xffffffffc0a00000\n\
                    nf_tables 360448 0 - Live 0x0000000000000000\n";
        let m = parse_modules(text);
        assert_eq!(
            m,
            vec![KernelModule {
                name: "ext4".into(),
                start: 0xffffffffc0a00000,
                end: 0xffffffffc0a00000 + 1040384
            }]
        );
    }
}
