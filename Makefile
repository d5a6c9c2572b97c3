# ngx_replay_module: build, test and demo.
#
#   make            build build/ngx_http_replay_module.so
#   make test       build, start PostgreSQL and S3 in a temp dir, run t/
#   make demo       build, start everything in demo/run/, print the URLs
#   make demo-stop  stop the demo

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
        demo demo-stop clean

all: module

module: $(MODULE)

# nginx's configure is run once, in a copy of Debian's nginx-dev tree, with
# the flags Debian built /usr/sbin/nginx with, so that the .so is
# binary-compatible with it (--with-compat).
$(NGX_BUILD)/Makefile: config
	@test -d $(NGINX_SRC) || { echo "no $(NGINX_SRC): install nginx-dev" >&2; exit 1; }
	rm -rf $(NGX_BUILD)
	mkdir -p $(BUILD)
	cp -a $(NGINX_SRC) $(NGX_BUILD)
	cd $(NGX_BUILD) && . ./conf_flags && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="$(WARN) -Wno-unused-parameter $(EXTRA_CC_OPT)" \
	        --with-ld-opt="$(EXTRA_LD_OPT)" \
	        --add-dynamic-module=$(CURDIR) > $(BUILD)/configure.log

$(MODULE): $(NGX_BUILD)/Makefile $(SOURCES)
	$(MAKE) -s -C $(NGX_BUILD) -f objs/Makefile modules
	@# a running nginx maps the old file: replace it, never write into it
	cp $(NGX_BUILD)/objs/ngx_http_replay_module.so $@.tmp
	mv -f $@.tmp $@

# signer unit tests: no nginx needed
$(BUILD)/sigv4_test: t/unit/sigv4_test.c ngx_replay_module/ngx_http_replay_sigv4.c ngx_replay_module/ngx_http_replay_sigv4.h
	@mkdir -p $(BUILD)
	$(CC) $(UNIT_CFLAGS) -o $@ t/unit/sigv4_test.c ngx_replay_module/ngx_http_replay_sigv4.c $(UNIT_LIBS)

$(BUILD)/sigv4_driver: t/unit/sigv4_driver.c ngx_replay_module/ngx_http_replay_sigv4.c ngx_replay_module/ngx_http_replay_sigv4.h
	@mkdir -p $(BUILD)
	$(CC) $(UNIT_CFLAGS) -o $@ t/unit/sigv4_driver.c ngx_replay_module/ngx_http_replay_sigv4.c $(UNIT_LIBS)

sigv4-driver: $(BUILD)/sigv4_driver

unit: $(BUILD)/sigv4_test $(BUILD)/sigv4_driver
	$(BUILD)/sigv4_test
	sh t/unit/driver_test.sh $(BUILD)/sigv4_driver

# what the tests and the demo need from Debian and npm
deps:
	sh t/services/deps

# The suite: real PostgreSQL and a signature-checking S3 server are started
# in a temp dir for the run and stopped after it, whatever the outcome.
test: module unit
	bash t/services/run-suite $(TEST_FILES)

test-valgrind: module unit
	TEST_NGINX_USE_VALGRIND=1 bash t/services/run-suite $(TEST_FILES)

demo: module
	bash demo/demo start

demo-stop:
	bash demo/demo stop

clean:
	rm -rf $(BUILD) t/servroot
