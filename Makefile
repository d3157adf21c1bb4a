# minichat: build, install and uninstall (GNU make).
#
#   make                    build the release binaries (cargo build --locked, release profile)
#   make install            install the binaries, man pages and shell completions
#                           into $(DESTDIR)$(PREFIX); uses the binaries already in
#                           $(PROFILE_DIR) as they are, builds them only if missing,
#                           and stops if they are older than the sources
#   make uninstall          remove exactly the files `make install` installs
#   make install-systemd    install contrib/chatd.service into $(DESTDIR)$(SYSTEMDUNITDIR),
#                           its ExecStart pointing at $(BINDIR)/chatd
#   make uninstall-systemd  remove that unit
#   make check              run the test suite (cargo test)
#
# Variables (set them on the command line: make install PREFIX=$HOME/.local):
#   PREFIX          /usr/local
#   DESTDIR         empty; a staging root for packages (not written into the unit)
#   PROFILE_DIR     target/release; where the binaries to install are, e.g. target/debug
#   SYSTEMDUNITDIR  $(PREFIX)/lib/systemd/system

PREFIX ?= /usr/local
BINDIR = $(PREFIX)/bin
DATADIR = $(PREFIX)/share
MANDIR = $(DATADIR)/man
BASHCOMPDIR = $(DATADIR)/bash-completion/completions
ZSHCOMPDIR = $(DATADIR)/zsh/site-functions
FISHCOMPDIR = $(DATADIR)/fish/vendor_completions.d
SYSTEMDUNITDIR = $(PREFIX)/lib/systemd/system

CARGO ?= cargo
PROFILE_DIR ?= $(or $(CARGO_TARGET_DIR),target)/release
# cargo's profile and target directory for PROFILE_DIR (target/debug is the
# "dev" profile), so that a missing binary is built where it is looked for.
CARGO_PROFILE = $(patsubst debug,dev,$(notdir $(PROFILE_DIR)))
CARGO_BUILD = $(CARGO) build --locked --profile $(CARGO_PROFILE) --target-dir $(dir $(PROFILE_DIR))

COMMANDS = chatd chat chat-send chat-tail
PROGRAMS = $(addprefix $(PROFILE_DIR)/,$(COMMANDS))
MAN1 = $(COMMANDS:%=man/%.1)
MAN7 = man/minichat.7
BASH_COMPLETIONS = $(COMMANDS:%=completions/bash/%)
ZSH_COMPLETIONS = $(COMMANDS:%=completions/zsh/_%)
FISH_COMPLETIONS = $(COMMANDS:%=completions/fish/%.fish)

# Every file `make install` writes, for `make uninstall`.
INSTALLED = \
	$(addprefix $(DESTDIR)$(BINDIR)/,$(COMMANDS)) \
	$(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(MAN1))) \
	$(addprefix $(DESTDIR)$(MANDIR)/man7/,$(notdir $(MAN7))) \
	$(addprefix $(DESTDIR)$(BASHCOMPDIR)/,$(notdir $(BASH_COMPLETIONS))) \
	$(addprefix $(DESTDIR)$(ZSHCOMPDIR)/,$(notdir $(ZSH_COMPLETIONS))) \
	$(addprefix $(DESTDIR)$(FISHCOMPDIR)/,$(notdir $(FISH_COMPLETIONS)))
UNIT = $(DESTDIR)$(SYSTEMDUNITDIR)/chatd.service
# The directories `make install` may create, deepest first: `make uninstall`
# removes those it leaves empty, up to the prefix itself.
INSTALL_DIRS = $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7 \
	$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
# What the binaries are built from: a binary older than any of them is stale.
# (Not Cargo.toml: cargo rebuilds nothing for a change there that does not
# matter, and the binary would look stale for ever.)
SOURCES = $(shell find src bin -name '*.rs')

.PHONY: all fresh install uninstall install-systemd uninstall-systemd check
# One cargo at a time: under -j, each missing binary would start its own.
.NOTPARALLEL:

# cargo knows what is stale, so `make` always asks it.
all:
	$(CARGO_BUILD)

# The binaries are files with no prerequisites: an existing set is installed
# as it is (so `sudo make install` after `make` never runs cargo as root), and
# only a missing one is built. A stale one (`git pull && sudo make install`)
# stops the install with what to do, rather than installing the old program.
$(PROGRAMS):
	$(CARGO_BUILD)

fresh: $(PROGRAMS)
	@for p in $(PROGRAMS); do \
	    newer=$$(find $(SOURCES) -newer "$$p" 2>/dev/null | head -n 1); \
	    if [ -n "$$newer" ]; then \
	        echo "make: $$p is older than $$newer: run \`make\` (as yourself) to rebuild it, then \`make install\` again" >&2; \
	        exit 1; \
	    fi; \
	done

install: fresh
	install -Dm755 -t $(DESTDIR)$(BINDIR) $(PROGRAMS)
	install -Dm644 -t $(DESTDIR)$(MANDIR)/man1 $(MAN1)
	install -Dm644 -t $(DESTDIR)$(MANDIR)/man7 $(MAN7)
	install -Dm644 -t $(DESTDIR)$(BASHCOMPDIR) $(BASH_COMPLETIONS)
	install -Dm644 -t $(DESTDIR)$(ZSHCOMPDIR) $(ZSH_COMPLETIONS)
	install -Dm644 -t $(DESTDIR)$(FISHCOMPDIR) $(FISH_COMPLETIONS)

uninstall:
	rm -f $(INSTALLED)
	@for d in $(INSTALL_DIRS); do \
	    while [ "$$d" != "$(DESTDIR)$(PREFIX)" ] && [ "$$d" != / ] && rmdir "$$d" 2>/dev/null; do \
	        d=$$(dirname "$$d"); \
	    done; \
	done

# The unit runs the installed chatd: @BINDIR@ becomes $(BINDIR), without
# DESTDIR, which is only where a package is staged.
install-systemd:
	install -d $(DESTDIR)$(SYSTEMDUNITDIR)
	sed '/^ExecStart=/s|@BINDIR@|$(BINDIR)|' contrib/chatd.service > $(UNIT)
	chmod 644 $(UNIT)

uninstall-systemd:
	rm -f $(UNIT)

check:
	$(CARGO) test
