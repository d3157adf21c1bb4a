//! Where minichat keeps things on a computer: the XDG base directories, read
//! as the specification says.

use std::ffi::OsString;
use std::path::PathBuf;

/// `$XDG_STATE_HOME/minichat`, or `~/.local/state/minichat` when it is unset,
/// empty or relative (which the specification says to ignore); `None`
/// without a home either.
pub fn state_dir(xdg_state_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    xdg_dir(xdg_state_home, home, ".local/state")
}

/// [`state_dir`] from this process's environment.
pub fn own_state_dir() -> Option<PathBuf> {
    state_dir(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

/// `$XDG_DATA_HOME/minichat`, or `~/.local/share/minichat`, read as
/// [`state_dir`] reads its variable.
pub fn data_dir(xdg_data_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    xdg_dir(xdg_data_home, home, ".local/share")
}

/// [`data_dir`] from this process's environment.
pub fn own_data_dir() -> Option<PathBuf> {
    data_dir(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"))
}

fn xdg_dir(variable: Option<OsString>, home: Option<OsString>, under_home: &str) -> Option<PathBuf> {
    let base = match variable.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => PathBuf::from(home.filter(|home| !home.is_empty())?).join(under_home),
    };
    Some(base.join("minichat"))
}
