//! Request bodies too large to keep in memory go to an unlinked temporary file: it has no name,
//! so nothing is left behind if the process dies, and the kernel frees it on the last close.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// Creates an anonymous read-write file in `dir` (O_TMPFILE), falling back to create-then-unlink
/// on filesystems without O_TMPFILE.
pub(crate) fn temp_file(dir: &Path) -> io::Result<File> {
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    match rustix::fs::open(dir, flags, Mode::RUSR | Mode::WUSR) {
        Ok(fd) => Ok(File::from(fd)),
        Err(e)
            if e == rustix::io::Errno::OPNOTSUPP
                || e == rustix::io::Errno::ISDIR
                || e == rustix::io::Errno::INVAL =>
        {
            named_then_unlinked(dir)
        }
        Err(e) => Err(e.into()),
    }
}

fn named_then_unlinked(dir: &Path) -> io::Result<File> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("catamount-body-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "could not find a free temporary file name",
    ))
}

/// Positions a filled temporary file at its start, ready to be read as `rack.input`.
pub(crate) fn rewind(mut file: File) -> io::Result<File> {
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}
