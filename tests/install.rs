//! `make install` into a prefix of the test's own, from the binaries this test
//! run built, then checked the way the files get used: the binaries run, `man`
//! finds the pages, bash completes from the completion; then `make uninstall`,
//! and `make install-systemd`. Needs `make`, `man` and `bash` (it says
//! `SKIPPED` without them); writes nowhere but its temporary directory.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{bin, TempDir};

const COMMANDS: [&str; 4] = ["chatd", "chat", "chat-send", "chat-tail"];

/// A file `make install` puts under the prefix.
struct Installed {
    /// Where it comes from: the built binary, or the committed file.
    source: PathBuf,
    /// Where it goes, relative to the prefix.
    dest: String,
    mode: u32,
}

/// Everything `make install` installs, per the Makefile's contract.
fn install_manifest() -> Vec<Installed> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = |source: String, dest: String| Installed { source: root.join(source), dest, mode: 0o644 };
    let mut files = Vec::new();
    for cmd in COMMANDS {
        files.push(Installed { source: bin(cmd), dest: format!("bin/{cmd}"), mode: 0o755 });
        files.push(file(format!("man/{cmd}.1"), format!("share/man/man1/{cmd}.1")));
        files.push(file(format!("completions/bash/{cmd}"), format!("share/bash-completion/completions/{cmd}")));
        files.push(file(format!("completions/zsh/_{cmd}"), format!("share/zsh/site-functions/_{cmd}")));
        files.push(file(format!("completions/fish/{cmd}.fish"), format!("share/fish/vendor_completions.d/{cmd}.fish")));
    }
    files.push(file("man/minichat.7".into(), "share/man/man7/minichat.7".into()));
    files
}

/// `program` with nothing from the caller's environment but `PATH`: no
/// `DESTDIR`, `MAKEFLAGS` or `BASH_ENV` can send a write elsewhere.
fn clean_command(program: &str) -> Command {
    let mut command = Command::new(program);
    command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin")));
    command
}

/// Whether every tool in `tools` runs here; if not, says `SKIPPED`.
fn have(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !clean_command(tool).arg("--version").output().is_ok_and(|out| out.status.success()))
        .collect();
    if !missing.is_empty() {
        println!("SKIPPED: {} not installed", missing.join(", "));
    }
    missing.is_empty()
}

/// Runs `make ARGS…` in the repository and fails the test if it fails.
fn make(args: &[&str]) -> Output {
    let out = clean_command("make").arg("-C").arg(env!("CARGO_MANIFEST_DIR")).args(args).output().expect("run make");
    assert!(out.status.success(), "make {} failed:\n{}{}", args.join(" "), text(&out.stdout), text(&out.stderr));
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `make install PREFIX=prefix` with the binaries of this test run.
fn make_install(prefix: &Path) {
    let missing: Vec<String> = install_manifest()
        .into_iter()
        .filter(|file| !file.source.is_file())
        .map(|file| file.source.display().to_string())
        .collect();
    assert!(missing.is_empty(), "make install needs files that are missing: {}", missing.join(", "));
    let profile_dir = bin("chatd").parent().unwrap().to_owned();
    make(&["install", &format!("PREFIX={}", prefix.display()), &format!("PROFILE_DIR={}", profile_dir.display())]);
}

/// Every regular file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, found: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, found);
            } else {
                found.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found);
    found.sort();
    found
}

#[test]
fn make_install_puts_every_file_in_place_where_its_tools_find_it_and_uninstall_takes_them_away() {
    if !have(&["make", "man", "bash"]) {
        return;
    }
    let temp = TempDir::new("install");
    let prefix = temp.path().join("prefix");
    // Someone else's file in the prefix, which uninstall must leave alone.
    fs::create_dir_all(prefix.join("bin")).unwrap();
    fs::write(prefix.join("bin/other-tool"), "keep me").unwrap();

    make_install(&prefix);
    each_file_is_a_copy_with_its_mode(&prefix);
    installed_chat_send_runs(&prefix);
    man_finds_the_installed_pages(&prefix);
    for (cmd, typed, wanted) in [
        ("chatd", &["--bi"][..], "--bind"),
        ("chat", &["--ser"], "--server"),
        ("chat-send", &["--ser"], "--server"),
        ("chat-tail", &["--na"], "--name"),
        // A host, not a file name, after --server.
        ("chat", &["--server", "localh"], "localhost"),
        ("chat-send", &["-s", "localh"], "localhost"),
    ] {
        bash_completes_from_the_installed_completion(&prefix, cmd, typed, wanted);
    }

    make(&["uninstall", &format!("PREFIX={}", prefix.display())]);
    assert_eq!(files_under(&prefix), ["bin/other-tool"], "make uninstall left these, or took someone else's");
    let left: Vec<_> = fs::read_dir(&prefix).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["bin"], "make uninstall left empty directories behind");
}

#[test]
fn make_install_refuses_binaries_older_than_the_sources() {
    if !have(&["make", "touch"]) {
        return;
    }
    let temp = TempDir::new("stale");
    let stale = temp.path().join("release");
    fs::create_dir_all(&stale).unwrap();
    for name in COMMANDS {
        fs::copy(bin(name), stale.join(name)).unwrap();
    }
    // As a `git pull` leaves them: built before the sources changed.
    let old = clean_command("touch").args(["-d", "2000-01-01"]).arg(stale.join("chat")).status().unwrap();
    assert!(old.success());
    let prefix = temp.path().join("prefix");
    let out = clean_command("make")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(["install", &format!("PREFIX={}", prefix.display()), &format!("PROFILE_DIR={}", stale.display())])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "make install took a stale chat:\n{err}");
    assert!(err.contains("is older than") && err.contains("run `make`"), "{err}");
    assert!(!prefix.exists(), "something was installed from a stale build");
}

fn each_file_is_a_copy_with_its_mode(prefix: &Path) {
    for file in install_manifest() {
        let dest = prefix.join(&file.dest);
        let meta = fs::metadata(&dest).unwrap_or_else(|e| panic!("make install did not install {}: {e}", file.dest));
        let mode = meta.permissions().mode() & 0o7777;
        assert!(mode == file.mode, "{} has mode {mode:o}, not {:o}", file.dest, file.mode);
        assert!(fs::read(&dest).unwrap() == fs::read(&file.source).unwrap(), "{} differs from its source", file.dest);
    }
}

fn installed_chat_send_runs(prefix: &Path) {
    let out = clean_command(prefix.join("bin/chat-send").to_str().unwrap()).arg("--version").output().unwrap();
    assert!(out.status.success(), "chat-send --version failed: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim_end(), format!("chat-send {}", env!("CARGO_PKG_VERSION")));
}

fn man_finds_the_installed_pages(prefix: &Path) {
    let manpath = prefix.join("share/man");
    for (page, want) in [(&["chat-send"][..], "man1/chat-send.1"), (&["7", "minichat"][..], "man7/minichat.7")] {
        let out = clean_command("man").arg("-M").arg(&manpath).arg("-w").args(page).output().unwrap();
        assert!(out.status.success(), "man -w {} found nothing: {}", page.join(" "), text(&out.stderr));
        assert_eq!(text(&out.stdout).trim_end(), manpath.join(want).display().to_string());
    }
}

/// Bash, as it would on Tab after `CMD TYPED`: loads the completion, finds
/// the function `complete -F` names, calls it with `COMP_*` set, and reads
/// `COMPREPLY`.
fn bash_completes_from_the_installed_completion(prefix: &Path, cmd: &str, typed: &[&str], wanted: &str) {
    let script = prefix.join("share/bash-completion/completions").join(cmd);
    let bash = |code: &str, args: &[&str]| {
        let out = clean_command("bash").args(["-c", code, "bash"]).arg(&script).args(args).output().unwrap();
        assert!(out.status.success(), "bash failed with {}:\n{code}\n{}", script.display(), text(&out.stderr));
        text(&out.stdout)
    };
    let spec = bash(r#"source "$1" && complete -p "$2""#, &[cmd]);
    let words: Vec<&str> = spec.split_whitespace().collect();
    assert_eq!(words.last(), Some(&cmd), "the completion is not for {cmd}: {spec}");
    let function = words
        .iter()
        .position(|&word| word == "-F")
        .and_then(|at| words.get(at + 1))
        .unwrap_or_else(|| panic!("complete -p {cmd} names no function: {spec}"));

    // Arguments: the script, the function, then the words typed.
    let complete = r#"
        source "$1" || exit
        function=$2
        shift 2
        COMP_WORDS=("$@")
        COMP_CWORD=$(($# - 1))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        COMP_TYPE=9
        COMP_KEY=9
        prev=$1
        [ $# -ge 2 ] && prev=${COMP_WORDS[$# - 2]}
        "$function" "$1" "${COMP_WORDS[$# - 1]}" "$prev" || exit
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let args: Vec<&str> = [function, cmd].into_iter().chain(typed.iter().copied()).collect();
    let replies = bash(complete, &args);
    assert!(replies.lines().any(|reply| reply == wanted), "{cmd} {typed:?}<Tab> offered {replies:?}, not {wanted}");
}

#[test]
fn make_install_systemd_points_the_unit_at_the_installed_chatd() {
    if !have(&["make"]) {
        return;
    }
    let temp = TempDir::new("install");
    let unit = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/chatd.service")).unwrap();
    assert!(unit.contains("\nExecStart=@BINDIR@/chatd "), "contrib/chatd.service has no ExecStart=@BINDIR@/chatd");

    let prefix = temp.path().join("prefix");
    make(&["install-systemd", &format!("PREFIX={}", prefix.display())]);
    let installed = prefix.join("lib/systemd/system/chatd.service");
    assert_eq!(fs::read_to_string(&installed).unwrap(), unit.replace("@BINDIR@", &format!("{}/bin", prefix.display())));
    assert_eq!(fs::metadata(&installed).unwrap().permissions().mode() & 0o7777, 0o644);

    // A package stages under DESTDIR, but the unit names where chatd will run from.
    let stage = temp.path().join("stage");
    make(&["install-systemd", &format!("DESTDIR={}", stage.display()), "PREFIX=/usr"]);
    let staged = fs::read_to_string(stage.join("usr/lib/systemd/system/chatd.service")).unwrap();
    assert!(staged.contains("\nExecStart=/usr/bin/chatd --bind 0.0.0.0:5000\n"), "staged unit:\n{staged}");

    make(&["uninstall-systemd", &format!("PREFIX={}", prefix.display())]);
    make(&["uninstall-systemd", &format!("DESTDIR={}", stage.display()), "PREFIX=/usr"]);
    assert_eq!(files_under(temp.path()), Vec::<String>::new(), "make uninstall-systemd left these");
}
