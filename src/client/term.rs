//! The terminal itself: whether a descriptor is one, its size, and raw
//! mode, which is undone on every way out (the guard's drop, and a panic
//! hook for a panic that never reaches the drop). The only unsafe code in
//! the client lives here.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Mutex, Once};

/// Whether `fd` is a terminal.
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(fd) == 1 }
}

/// The terminal's size in columns and rows, if it says.
pub fn size(fd: RawFd) -> Option<(usize, usize)> {
    // SAFETY: an all-zero winsize is valid; TIOCGWINSZ writes one.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: `ws` is a valid winsize for the ioctl to fill.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0)
        .then_some((usize::from(ws.ws_col), usize::from(ws.ws_row)))
}

/// The settings to put back, shared with the panic hook.
static SAVED: Mutex<Option<(RawFd, libc::termios)>> = Mutex::new(None);

/// Raw mode on a terminal while this lives.
#[derive(Debug)]
pub struct RawMode {
    _private: (),
}

impl RawMode {
    /// Switches `fd` to raw mode: bytes as typed, no echo, no signals from
    /// Ctrl-C (the editor reads it as a key), no output processing (rows
    /// end in CRLF written by the screen).
    pub fn enter(fd: RawFd) -> io::Result<RawMode> {
        install_panic_hook();
        // SAFETY: an all-zero termios is a valid value to be overwritten.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is valid for tcgetattr to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios; cfmakeraw only edits it.
        unsafe { libc::cfmakeraw(&mut raw) };
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some((fd, saved));
        // SAFETY: `raw` is a valid termios for this descriptor.
        if unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &raw) } != 0 {
            let err = io::Error::last_os_error();
            restore();
            return Err(err);
        }
        Ok(RawMode { _private: () })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the saved settings back, once; later calls do nothing.
fn restore() {
    // A panic while the lock is held must not stop the hook restoring.
    let saved = match SAVED.try_lock() {
        Ok(mut g) => g.take(),
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner().take(),
        Err(std::sync::TryLockError::WouldBlock) => None,
    };
    if let Some((fd, termios)) = saved {
        // SAFETY: `termios` came from tcgetattr on this descriptor.
        unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &termios) };
    }
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let was_raw = SAVED.try_lock().map(|g| g.is_some()).unwrap_or(true);
            restore();
            if was_raw {
                // Plain attributes, a visible cursor and a fresh row for the
                // message. Written directly: stdout's lock may be held.
                let reset = b"\x1b[0m\x1b[?25h\r\n";
                // SAFETY: writes a static buffer to stdout's descriptor.
                unsafe { libc::write(1, reset.as_ptr().cast(), reset.len()) };
            }
            previous(info);
        }));
    });
}
