//! Where minichat keeps things on a computer: the XDG base directories, read
//! as the specification says.

use std::ffi::OsString;
use std::path::PathBuf;

/// `$XDG_STATE_HOME/minichat`, or `~/.local/state/minichat` when it is unset,
/// empty or relative (which the specification says to ignore); `None`
/// without a home either.
pub fn state_dir(xdg_state_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let state = match xdg_state_home.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => PathBuf::from(home.filter(|home| !home.is_empty())?).join(".local/state"),
    };
    Some(state.join("minichat"))
}

/// [`state_dir`] from this process's environment.
pub fn own_state_dir() -> Option<PathBuf> {
    state_dir(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}
