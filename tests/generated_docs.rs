//! `man/*.1` and `completions/` are generated from the clap definitions in
//! `src/cli.rs` (with the hand-written sections in `docs/man/*.roff`) and
//! committed, so they install without a build step. This test fails when
//! they are stale, and says how to regenerate them.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use clap_complete::Shell;
use minichat::cli::{ChatArgs, ChatSendArgs, ChatTailArgs, ChatdArgs};

const REGENERATE: &str = "UPDATE_DOCS=1 cargo test --test tests generated_docs";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn commands() -> Vec<clap::Command> {
    vec![ChatdArgs::command(), ChatArgs::command(), ChatSendArgs::command(), ChatTailArgs::command()]
}

/// The man page: clap's sections, then the hand-written ones.
fn man_page(command: &clap::Command) -> Vec<u8> {
    let name = command.get_name().to_owned();
    let man = clap_mangen::Man::new(command.clone())
        .source(format!("minichat {}", env!("CARGO_PKG_VERSION")))
        .manual("minichat");
    let mut page = Vec::new();
    man.render_title(&mut page).unwrap();
    man.render_name_section(&mut page).unwrap();
    man.render_synopsis_section(&mut page).unwrap();
    man.render_description_section(&mut page).unwrap();
    man.render_options_section(&mut page).unwrap();
    let extra = root().join(format!("docs/man/{name}.roff"));
    page.extend(std::fs::read(&extra).unwrap_or_else(|e| panic!("{}: {e}", extra.display())));
    page
}

fn completion(shell: Shell, command: &clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    let name = command.get_name().to_owned();
    clap_complete::generate(shell, &mut command.clone(), name, &mut out);
    if shell == Shell::Bash {
        return bash_hosts_for_servers(&out);
    }
    out
}

/// clap_complete's bash script completes every option's value as a file
/// name; `--server` takes a host, as zsh and fish already know from its
/// value hint.
fn bash_hosts_for_servers(script: &[u8]) -> Vec<u8> {
    let script = String::from_utf8(script.to_vec()).expect("a UTF-8 script");
    let files = "COMPREPLY=($(compgen -f \"${cur}\"))";
    let hosts = "COMPREPLY=($(compgen -A hostname -- \"${cur}\"))";
    let mut out = String::new();
    let mut after_server = false;
    for line in script.split_inclusive('\n') {
        let trimmed = line.trim();
        if after_server && trimmed == files {
            out.push_str(&line.replace(files, hosts));
        } else {
            out.push_str(line);
        }
        after_server = matches!(trimmed, "--server)" | "-s)");
    }
    out.into_bytes()
}

/// Every generated file, by its path in the repository.
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for command in commands() {
        let name = command.get_name().to_owned();
        files.push((PathBuf::from(format!("man/{name}.1")), man_page(&command)));
        files.push((PathBuf::from(format!("completions/bash/{name}")), completion(Shell::Bash, &command)));
        files.push((PathBuf::from(format!("completions/zsh/_{name}")), completion(Shell::Zsh, &command)));
        files.push((PathBuf::from(format!("completions/fish/{name}.fish")), completion(Shell::Fish, &command)));
    }
    files
}

#[test]
fn generated_docs_are_current() {
    let update = std::env::var_os("UPDATE_DOCS").is_some();
    let mut stale = Vec::new();
    for (path, content) in generated() {
        let full = root().join(&path);
        if update {
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, &content).unwrap();
        } else if std::fs::read(&full).ok().as_deref() != Some(&content[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(stale.is_empty(), "stale or missing: {}; regenerate them with: {REGENERATE}", stale.join(", "));
}

#[test]
fn man_pages_render_without_warnings() {
    if Command::new("groff").arg("--version").output().is_err() {
        eprintln!("SKIPPED: groff is not installed");
        return;
    }
    let pages = ["chatd.1", "chat.1", "chat-send.1", "chat-tail.1", "minichat.7"];
    for page in pages {
        let out =
            Command::new("groff").args(["-ww", "-z", "-man"]).arg(root().join("man").join(page)).output().unwrap();
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && warnings.is_empty(), "man/{page}: {warnings}");
    }
}

#[test]
fn every_page_has_the_sections_a_reader_looks_for() {
    for command in commands() {
        let name = command.get_name();
        let page = String::from_utf8(man_page(&command)).unwrap();
        for section in ["DESCRIPTION", "OPTIONS", "EXAMPLES", "EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"] {
            assert!(
                page.contains(&format!(".SH {section}")) || page.contains(&format!(".SH \"{section}\"")),
                "{name}.1 has no {section}"
            );
        }
    }
}
