# SPDX-License-Identifier: LGPL-2.1-or-later
#
# tsfarm: one Makefile drives everything. Objects are listed in ./Kbuild.
#
#   make                build everything under $(O) (default build/)
#   make check          install missing packages, run every test tier
#   make demo           install missing packages, run the demo farm
#   make V=1            show the commands
#   make O=/tmp/b       build elsewhere
#   make install DESTDIR=/tmp/root PREFIX=/usr

.DELETE_ON_ERROR:
.SUFFIXES:
MAKEFLAGS += --no-builtin-rules --no-builtin-variables
.DEFAULT_GOAL := all

TSFARM_MANIFEST := 1
include Kbuild

O ?= build
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
DESTDIR ?=
FUZZ_SECONDS ?= 60

CC := $(or $(CC),gcc)
CLANG ?= clang
BPFTOOL ?= bpftool
PKG_CONFIG ?= pkg-config
INSTALL ?= install
ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

V ?= 0
ifeq ($(V),1)
Q :=
say = @true
else
Q := @
say = @printf '  %-9s %s\n'
endif

# Libraries every binary may use. Evaluated once, here; `make check` and
# `make demo` install missing packages first and then re-enter make, so
# this never runs before the packages exist.
PKGS := libsystemd inih jansson libbpf libnl-3.0 libnl-route-3.0 libmicrohttpd libcurl openssl gnutls sqlite3
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)
# libresolv has no .pc file: DNS SRV parsing (ns_initparse) for lib/licdiscovery.c.
PKG_LIBS += -lresolv

# Build variants: normal, asan (unit tests), fuzz (libFuzzer, clang).
VARIANT ?= normal
OPT_CFLAGS := -O2 -g
SAN_FLAGS :=
ifeq ($(VARIANT),asan)
OPT_CFLAGS := -O1 -g -fno-omit-frame-pointer
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all
endif
ifeq ($(VARIANT),fuzz)
CC := $(CLANG)
OPT_CFLAGS := -O1 -g -fno-omit-frame-pointer
SAN_FLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
endif

WARNINGS := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow \
	-Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla \
	-Wpointer-arith -Wundef -Wimplicit-fallthrough
VERSION := 0.1.0
CPPFLAGS_ALL := -D_GNU_SOURCE -DTSFARM_VERSION='"$(VERSION)"' -I. -Ilib/include -Ibpf -I$(O)
CFLAGS_ALL := -std=c17 $(WARNINGS) $(OPT_CFLAGS) $(SAN_FLAGS) -MMD -MP \
	$(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL := $(SAN_FLAGS) -Wl,--as-needed $(LDFLAGS)

lib-objs := $(addprefix $(O)/,$(lib-y))
tsagent-objs := $(addprefix $(O)/,$(tsagent-y))
tsctl-objs := $(addprefix $(O)/,$(tsctl-y))
tshost-objs := $(addprefix $(O)/,$(tshost-y))
tsclient-objs := $(addprefix $(O)/,$(tsclient-y))
bpf-objs := $(addprefix $(O)/,$(bpf-y))
bpf-skels := $(bpf-objs:.bpf.o=.skel.h)
unit-bins := $(addprefix $(O)/,$(unit-y))
bpftest-bins := $(addprefix $(O)/,$(bpftest-y))
fuzz-bins := $(addprefix $(O)/,$(fuzz-y))
bench-bins := $(addprefix $(O)/,$(bench-y))
helper-bins := $(addprefix $(O)/,$(helper-y))
LIBTSFARM := $(O)/libtsfarm.a
BINARIES := $(O)/tsagent $(O)/tsctl $(O)/tsclient
BINARIES += $(O)/tshost

# Extra objects a test links besides its own: `<test>-y` in Kbuild.
test-extra = $(addprefix $(O)/,$($(patsubst $(O)/%,%,$(1))-y))

.PHONY: all
all: $(BINARIES) $(bpf-objs) $(helper-bins)

# ---- compile ---------------------------------------------------------------

$(O)/%.o: %.c
	$(say) CC "$@"
	@mkdir -p $(@D)
	$(Q)$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -c $< -o $@

# Everything that includes a skeleton waits for them on the first build;
# after that the .d files track them.
$(tsagent-objs) $(bpftest-bins:=.o): | $(bpf-skels)

$(LIBTSFARM): $(lib-objs)
	$(say) AR "$@"
	$(Q)rm -f $@ && ar rcs $@ $^

$(O)/tsagent: $(tsagent-objs) $(LIBTSFARM)
	$(say) LINK "$@"
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(PKG_LIBS) -o $@

$(O)/tsctl: $(tsctl-objs) $(LIBTSFARM)
	$(say) LINK "$@"
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(PKG_LIBS) -o $@

# tshost alone needs libpam (it has no .pc file).
$(O)/tshost: $(tshost-objs) $(LIBTSFARM)
	$(say) LINK "$@"
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(PKG_LIBS) -lpam -lutil -o $@

$(O)/tsclient: $(tsclient-objs) $(LIBTSFARM)
	$(say) LINK "$@"
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(PKG_LIBS) -lpthread -o $@

.SECONDEXPANSION:
$(unit-bins) $(bpftest-bins): %: %.o $$(call test-extra,$$@) $(LIBTSFARM)
	$(say) LINK "$@"
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(PKG_LIBS) -lcmocka -o $@

# Benchmarks and test helpers: the normal variant (-O2), no sanitizers, no cmocka.
$(bench-bins) $(helper-bins): %: %.o $$(call test-extra,$$@) $(LIBTSFARM)
	$(say) LINK "$@"
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(PKG_LIBS) -o $@

$(fuzz-bins): %: %.o $(LIBTSFARM)
	$(say) LINK "$@"
	$(Q)$(CC) $(LDFLAGS_ALL) -fsanitize=fuzzer $^ $(PKG_LIBS) -o $@

# ---- BPF -------------------------------------------------------------------

# vmlinux.h comes from the running kernel's BTF; it is rewritten only when
# the BTF changed, so a rebuild does not recompile every BPF object.
.PHONY: FORCE
$(O)/bpf/vmlinux.h: FORCE
	@mkdir -p $(@D)
	$(Q)$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp
	$(Q)if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; echo "  GEN       $@"; fi

$(O)/bpf/%.bpf.o: bpf/%.bpf.c $(O)/bpf/vmlinux.h
	$(say) BPF "$@"
	@mkdir -p $(@D)
	$(Q)$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror \
		-I$(O)/bpf -Ibpf -Ibpf/include -MMD -MP -c $< -o $@

$(O)/bpf/%.skel.h: $(O)/bpf/%.bpf.o
	$(say) SKEL "$@"
	$(Q)$(BPFTOOL) gen skeleton $< name $(notdir $*) > $@

# ---- tests -----------------------------------------------------------------

RESULTS := $(O)/results
RUN := tests/run.sh

.PHONY: deps check check-all check-unit check-bpf check-integration fuzz bench
deps:
	$(Q)tools/deps.sh $(DEPS_PROFILE)

# The one command CI runs: packages, then every tier, then one summary.
check: DEPS_PROFILE := check
check: deps
	$(Q)$(MAKE) --no-print-directory check-all

check-all:
	$(Q)rm -rf $(RESULTS)
	-$(Q)$(MAKE) --no-print-directory check-unit
	-$(Q)$(MAKE) --no-print-directory check-bpf
	-$(Q)$(MAKE) --no-print-directory check-integration
	-$(Q)$(MAKE) --no-print-directory fuzz
	$(Q)tests/summary.sh $(RESULTS)

# Unit tests run under ASan+UBSan (LeakSanitizer included), in their own tree.
check-unit:
	$(Q)$(MAKE) --no-print-directory VARIANT=asan O=$(O)/asan \
		$(addprefix $(O)/asan/,$(unit-y))
	$(Q)$(RUN) unit $(RESULTS) $(addprefix $(O)/asan/,$(unit-y))

check-bpf: $(bpftest-bins) $(O)/tsctl
	$(Q)TSFARM_BUILD=$(abspath $(O)) $(RUN) bpf $(RESULTS) $(bpftest-bins)

check-integration: all
	$(Q)TSFARM_BUILD=$(abspath $(O)) $(RUN) integration $(RESULTS) $(integration-y)

fuzz:
	$(Q)$(MAKE) --no-print-directory VARIANT=fuzz O=$(O)/fuzz \
		$(addprefix $(O)/fuzz/,$(fuzz-y))
	$(Q)FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh $(RESULTS) \
		$(addprefix $(O)/fuzz/,$(fuzz-y))

bench: DEPS_PROFILE := bench
bench: deps
	$(Q)$(MAKE) --no-print-directory all $(bench-bins)
	$(Q)TSFARM_BUILD=$(abspath $(O)) tests/bench/run.sh
	$(Q)TSFARM_BUILD=$(abspath $(O)) tests/bench/dir.sh
	$(Q)TSFARM_BUILD=$(abspath $(O)) tests/bench/lic.sh

# ---- demo ------------------------------------------------------------------

.PHONY: demo demo-down
demo: DEPS_PROFILE := demo
demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)TSFARM_BUILD=$(abspath $(O)) tools/demo.sh up

demo-down:
	$(Q)TSFARM_BUILD=$(abspath $(O)) tools/demo.sh down

# ---- install ---------------------------------------------------------------

.PHONY: install
install: all
	$(Q)$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/tsfarm
	$(Q)$(INSTALL) -m 0755 $(O)/tsagent $(DESTDIR)$(SBINDIR)/tsagent
	$(Q)$(INSTALL) -m 0755 $(O)/tsctl $(DESTDIR)$(BINDIR)/tsctl
	$(Q)$(INSTALL) -m 0755 $(O)/tshost $(DESTDIR)$(SBINDIR)/tshost
	$(Q)$(INSTALL) -m 0755 $(O)/tsclient $(DESTDIR)$(BINDIR)/tsclient
	$(Q)$(INSTALL) -m 0644 dist/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	$(Q)$(INSTALL) -m 0644 dist/man/*.5 $(DESTDIR)$(MANDIR)/man5/
	$(Q)$(INSTALL) -m 0644 dist/man/*.8 $(DESTDIR)$(MANDIR)/man8/
	$(Q)sed 's|@SBINDIR@|$(SBINDIR)|g' dist/systemd/tsagent.service.in \
		> $(DESTDIR)$(UNITDIR)/tsagent.service
	$(Q)test -e $(DESTDIR)$(SYSCONFDIR)/tsfarm/tsagent.conf || \
		$(INSTALL) -m 0644 dist/config/tsagent.conf $(DESTDIR)$(SYSCONFDIR)/tsfarm/tsagent.conf

# ---- housekeeping ----------------------------------------------------------

.PHONY: clean format
clean:
	$(Q)rm -rf $(O)

format:
	$(Q)git ls-files '*.c' '*.h' | xargs clang-format -i

-include $(patsubst %.o,%.d,$(lib-objs) $(tsagent-objs) $(tsctl-objs) $(tsclient-objs) $(bpf-objs)) \
	$(addsuffix .d,$(unit-bins) $(bpftest-bins) $(fuzz-bins) $(bench-bins) $(helper-bins))
-include $(patsubst %.o,%.d,$(tshost-objs))
