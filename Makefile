# ngx_replay_module: build, test and demo.  Each target installs what it
# needs first (t/services/deps), then builds.
#
#   make            build build/ngx_http_replay_module.so
#   make test       build, start PostgreSQL and S3 in a temp dir, run t/
#   make test-runner  the test runner's self-test: wrong blocks must fail
#   make test-mutants  broken builds of the module must turn the suite red
#   make demo       build, start everything in demo/run/, print the URLs
#   make demo-stop  stop the demo
#   make test-matrix  the suite against Debian 12's, 13's and sid's nginx,
#                   PostgreSQL, OpenSSL and libpq, in chroots (t/chroot/)
#   make deb        libnginx-mod-http-replay .debs for Debian 12 and 13
#   make test-deb   install each .deb in a clean chroot and serve a replay
#   make test-fresh make test and make demo in a fresh Debian 12 chroot
#   make chroots    make the chroots of test-matrix and deb, build the .debs
#   make test-reliability  faults and load against a master/worker nginx
#   make test-asan  the suite with the module built with ASan + UBSan
#   make fuzz       the libFuzzer targets of t/fuzz/, FUZZ_SECONDS each
#   make bench      measure against proxy_pass and a fetch-whole proxy,
#                   write docs/benchmarks.md (bench/run; not part of test)

SHELL        := /bin/bash
NGINX_SRC    ?= /usr/share/nginx/src
NGINX_BIN    ?= /usr/sbin/nginx
BUILD        := $(CURDIR)/build
NGX_BUILD    := $(BUILD)/nginx
MODULE       := $(BUILD)/ngx_http_replay_module.so
SOURCES      := $(wildcard ngx_replay_module/*.c ngx_replay_module/*.h) config
CC           ?= cc
WARN         := -Wall -Wextra -Werror
UNIT_CFLAGS  := -O1 -g $(WARN) -Ingx_replay_module
UNIT_LIBS    := -lcrypto

.PHONY: all module unit sigv4-driver test test-valgrind prove deps \
        build-deps demo demo-stop clean test-reliability asan-module \
        test-asan test-reliability-asan fuzz fuzz-build fuzz-replay \
        reliability-deps bench test-runner test-mutants test-matrix deb \
        test-deb test-fresh chroots

all: module

module: build-deps
	$(MAKE) $(MODULE)

# what building needs (nginx-dev, libpq-dev, libssl-dev, a compiler), on
# Debian; elsewhere NGINX_SRC must be there already
build-deps:
	@if [ -r /etc/debian_version ]; then bash t/services/deps --build; fi

# nginx's configure is run once, in a copy of Debian's nginx-dev tree, with
# the flags Debian built /usr/sbin/nginx with, so that the .so is
# binary-compatible with it (--with-compat).
$(NGX_BUILD)/objs/Makefile: config
	@test -d $(NGINX_SRC) || { echo "no $(NGINX_SRC): install nginx-dev" >&2; exit 1; }
	rm -rf $(NGX_BUILD)
	mkdir -p $(BUILD)
	cp -a $(NGINX_SRC) $(NGX_BUILD)
	cd $(NGX_BUILD) && . ./conf_flags && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="$(WARN) -Wno-unused-parameter $(EXTRA_CC_OPT)" \
	        --with-ld-opt="$(EXTRA_LD_OPT)" \
	        --add-dynamic-module=$(CURDIR) > $(BUILD)/configure.log

$(MODULE): $(NGX_BUILD)/objs/Makefile $(SOURCES)
	$(MAKE) -s -C $(NGX_BUILD) -f objs/Makefile modules
	@# a running nginx maps the old file: replace it, never write into it
	cp $(NGX_BUILD)/objs/ngx_http_replay_module.so $@.tmp
	mv -f $@.tmp $@

# signer unit tests: no nginx needed
$(BUILD)/sigv4_test: t/unit/sigv4_test.c t/unit/tap.h ngx_replay_module/ngx_http_replay_sigv4.c ngx_replay_module/ngx_http_replay_sigv4.h
	@mkdir -p $(BUILD)
	$(CC) $(UNIT_CFLAGS) -o $@ t/unit/sigv4_test.c ngx_replay_module/ngx_http_replay_sigv4.c $(UNIT_LIBS)

$(BUILD)/sigv4_driver: t/unit/sigv4_driver.c ngx_replay_module/ngx_http_replay_sigv4.c ngx_replay_module/ngx_http_replay_sigv4.h
	@mkdir -p $(BUILD)
	$(CC) $(UNIT_CFLAGS) -o $@ t/unit/sigv4_driver.c ngx_replay_module/ngx_http_replay_sigv4.c $(UNIT_LIBS)

sigv4-driver: $(BUILD)/sigv4_driver

# the credential services' answer readers: no nginx needed either
$(BUILD)/creds_parse_test: t/unit/creds_parse_test.c t/unit/tap.h ngx_replay_module/ngx_http_replay_creds_parse.c ngx_replay_module/ngx_http_replay_creds_parse.h
	@mkdir -p $(BUILD)
	$(CC) $(UNIT_CFLAGS) -o $@ t/unit/creds_parse_test.c ngx_replay_module/ngx_http_replay_creds_parse.c

unit: build-deps
	$(MAKE) $(BUILD)/sigv4_test $(BUILD)/sigv4_driver $(BUILD)/creds_parse_test fuzz-replay
	$(BUILD)/sigv4_test
	$(BUILD)/creds_parse_test
	sh t/unit/driver_test.sh $(BUILD)/sigv4_driver

# The fuzz targets' seed corpora and the inputs that once crashed them
# (t/fuzz/regressions/TARGET/), replayed without libFuzzer by the plain cc.
FUZZ_TARGETS := uri_encode sign creds aws
FUZZ_REPLAY  := $(FUZZ_TARGETS:%=$(BUILD)/fuzz-replay/%)
FUZZ_SRCS    := ngx_replay_module/ngx_http_replay_sigv4.c \
                ngx_replay_module/ngx_http_replay_creds_parse.c
FUZZ_DEPS    := $(FUZZ_SRCS) $(FUZZ_SRCS:.c=.h)

$(BUILD)/fuzz-replay/%: t/fuzz/%.c t/fuzz/replay.c t/fuzz/fuzz.h $(FUZZ_DEPS)
	@mkdir -p $(BUILD)/fuzz-replay
	$(CC) $(UNIT_CFLAGS) -It/fuzz -o $@ $< t/fuzz/replay.c $(FUZZ_SRCS) $(UNIT_LIBS)

fuzz-replay: $(FUZZ_REPLAY)
	@for t in $(FUZZ_TARGETS); do \
	    $(BUILD)/fuzz-replay/$$t t/fuzz/corpus/$$t \
	        $$(test -d t/fuzz/regressions/$$t && echo t/fuzz/regressions/$$t) \
	        || exit 1; \
	done

# what the tests and the demo need from Debian and npm
deps:
	sh t/services/deps

# The suite: real PostgreSQL and a signature-checking S3 server are started
# in a temp dir for the run and stopped after it, whatever the outcome.
# What it needs is installed first, then the module is built (a sub-make:
# with -j too, nothing is built before the packages are there).
test: deps
	$(MAKE) module unit
	bash t/services/run-suite $(TEST_FILES)

test-valgrind: deps
	$(MAKE) module unit
	TEST_NGINX_USE_VALGRIND=1 bash t/services/run-suite $(TEST_FILES)

# The runner's self-test against the stock nginx, no services: what the
# suite relies on (the checks of a block and those t/lib/ReplayTest.pm
# adds) fails a block that is wrong, and a failing script with helper
# servers exits non-zero (020-exit-status.t).  With the real Test::Nginx when perl
# finds it (PERL5LIB=DIR/lib), as make test.
test-runner: deps
	if perl -MTest::Nginx::Socket -e1 2>/dev/null; then \
	    prove t/runner/selftest/; \
	else \
	    PERL5LIB=$(CURDIR)/t/runner$${PERL5LIB:+:$$PERL5LIB} prove t/runner/selftest/; \
	fi

# Mutants of the module (t/mutants/*.mutant: no Authorization header, S3's
# headers not filtered, a crash in the pool cleanup, a descriptor leaked,
# a counter not moved): each must turn the .t files it names red
# (t/mutants/run, about 5 minutes).  MUTANTS="fd-leak" runs some only.
test-mutants: deps
	$(MAKE) module unit
	bash t/mutants/run $(MUTANTS)

# What these need beyond `make deps` (clang, libFuzzer, the sanitizer
# runtimes); `make test` does not.
reliability-deps: deps
	bash t/reliability/deps

# Faults and load against nginx in master/worker mode: PostgreSQL and S3
# killed under load, a stalling origin, 1,000 aborted downloads, reloads,
# 20,000 mixed requests, bad input (t/reliability/run; about 2 minutes).
# SCENARIOS="mix pg" runs some only.
test-reliability: reliability-deps
	$(MAKE) module
	REL_MODULE=$(MODULE) bash t/reliability/run $(SCENARIOS)

# The module built with AddressSanitizer and UndefinedBehaviorSanitizer in
# a build dir of its own, loaded by the stock nginx with the ASan runtime
# preloaded; any sanitizer report fails the run (t/asan/run).
ASAN_BUILD   ?= $(BUILD)/asan
ASAN_CFLAGS  := -fsanitize=address,undefined -fno-omit-frame-pointer -g
ASAN_LDFLAGS := -fsanitize=address,undefined

asan-module:
	$(MAKE) BUILD=$(ASAN_BUILD) EXTRA_CC_OPT="$(ASAN_CFLAGS)" \
	    EXTRA_LD_OPT="$(ASAN_LDFLAGS)" module

$(ASAN_BUILD)/sigv4_test: t/unit/sigv4_test.c t/unit/tap.h ngx_replay_module/ngx_http_replay_sigv4.c ngx_replay_module/ngx_http_replay_sigv4.h
	@mkdir -p $(ASAN_BUILD)
	$(CC) $(UNIT_CFLAGS) $(ASAN_CFLAGS) -fno-sanitize-recover=all -o $@ t/unit/sigv4_test.c ngx_replay_module/ngx_http_replay_sigv4.c $(UNIT_LIBS)

test-asan: reliability-deps
	$(MAKE) asan-module unit $(ASAN_BUILD)/sigv4_test
	ASAN_OPTIONS=detect_leaks=1 $(ASAN_BUILD)/sigv4_test
	bash t/asan/run $(ASAN_BUILD)/ngx_http_replay_module.so $(TEST_FILES)

# the reliability scenarios with the ASan module (RSS checks loosened)
test-reliability-asan: reliability-deps
	$(MAKE) asan-module
	REL_ASAN=1 REL_MODULE=$(ASAN_BUILD)/ngx_http_replay_module.so \
	    bash t/reliability/run $(SCENARIOS)

# libFuzzer targets (clang): each runs FUZZ_SECONDS on a copy of its seed
# corpus after replaying its regressions; then nginx -t on generated
# configurations with the ASan module (t/fuzz/run).
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_CFLAGS  := -g -O1 -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined $(WARN) -Ingx_replay_module -It/fuzz

$(BUILD)/fuzz/%: t/fuzz/%.c t/fuzz/fuzz.h $(FUZZ_DEPS)
	@mkdir -p $(BUILD)/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_SRCS) $(UNIT_LIBS)

fuzz-build: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)

fuzz: reliability-deps
	$(MAKE) fuzz-build asan-module
	bash t/fuzz/run $(FUZZ_SECONDS) $(BUILD)/fuzz $(ASAN_BUILD)/ngx_http_replay_module.so

# The benchmark (about 10 minutes, root): it builds what it needs itself.
bench: module
	bash bench/run

# The whole suite in Debian chroots (t/chroot/matrix): 12's nginx 1.22 /
# PostgreSQL 15, 13's 1.26 / 17, sid's 1.30 / 18, each with its OpenSSL,
# libpq and node.  The chroots are kept in REPLAY_CHROOT_CACHE (default
# /var/cache/ngx-replay-chroot) and reused.  MATRIX="trixie" runs one;
# TEST_FILES="..." runs only those .t files in each leg.
MATRIX ?= bookworm trixie sid

test-matrix:
	TEST_FILES="$(TEST_FILES)" bash t/chroot/matrix $(MATRIX)

# CI's head start (.ci/run starts it in the background after make test):
# the legs' chroots made, their packages installed and the module built
# in each, then the Debian packages built, while the host runs its checks
chroots:
	MATRIX_STEPS=prepare bash t/chroot/matrix $(MATRIX)
	$(MAKE) deb

# libnginx-mod-http-replay for Debian 12 and 13, built with debhelper and
# nginx-dev's dh_nginx in a chroot of each (build/deb/SUITE/*.deb); then
# each installed with apt into a clean chroot, nginx -t, and one replay
# served by it from the real services (t/chroot/deb).
DEB_SUITES ?= bookworm trixie

DEB_INPUTS := $(SOURCES) CHANGES LICENSE $(shell find debian -type f)

deb: $(DEB_SUITES:%=$(BUILD)/deb/%/.built)

# rebuilt when what goes into it changed (t/chroot/deb empties the dir)
$(BUILD)/deb/%/.built: $(DEB_INPUTS)
	bash t/chroot/deb build $*
	touch $@

test-deb: deb
	bash t/chroot/deb test $(DEB_SUITES)

# The README's `make test` and `make demo` from a clean clone of HEAD in a
# fresh Debian 12 chroot, with Debian's node 18 and with this host's node
# (t/chroot/fresh).
test-fresh:
	bash t/chroot/fresh $(FRESH_NODES)

demo: deps
	$(MAKE) module
	bash demo/demo start

demo-stop:
	bash demo/demo stop

clean:
	rm -rf $(BUILD) t/servroot
