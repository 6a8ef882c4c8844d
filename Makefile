# chappe -- federation relay for sovereign Matrix deployments. `make help` lists the targets.

CC      ?= cc
CLANG   ?= clang
PYTHON  := /usr/bin/python3
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)

LLHTTP_DIR := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp
LLHTTP_SRC := $(LLHTTP_DIR)/api.c $(LLHTTP_DIR)/http.c $(LLHTTP_DIR)/llhttp.c
# llhttp is built in its strict mode: CRLF after chunk data is enforced (RFC 9112 section 7.1).

SRC     := $(sort $(wildcard src/*.c))
LIB_SRC := $(filter-out src/main.c,$(SRC))
HDR     := $(wildcard include/chappe/*.h)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))

CPPFLAGS := -D_GNU_SOURCE -Iinclude -I$(LLHTTP_INC)
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-missing-field-initializers
BASE     := -std=gnu11 -pthread -MMD -MP
LIBS     := -luv -lmbedtls -lmbedx509 -lmbedcrypto -llmdb -lsodium -ljansson -lcares -lyaml -lpthread

REL_CFLAGS := $(BASE) -O2 -g $(WARN)
DBG_CFLAGS := $(BASE) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
              -fno-sanitize-recover=all $(WARN) -DCHAPPE_DEBUG
DBG_LDFLAGS := -fsanitize=address,undefined

REL_OBJ := $(patsubst src/%.c,build/obj/%.o,$(SRC))
DBG_OBJ := $(patsubst src/%.c,build/debug/obj/%.o,$(SRC))
DBG_LIB_OBJ := $(patsubst src/%.c,build/debug/obj/%.o,$(LIB_SRC))
REL_LLHTTP := $(patsubst $(LLHTTP_DIR)/%.c,build/llhttp/%.o,$(LLHTTP_SRC))
DBG_LLHTTP := $(patsubst $(LLHTTP_DIR)/%.c,build/debug/llhttp/%.o,$(LLHTTP_SRC))
UNIT_BIN := $(patsubst tests/unit/%.c,build/debug/tests/%,$(UNIT_SRC))

.PHONY: all deps debug test test-build unit scenario run certs fuzz format lint clean help bench bench-crypto bench-verify

all: build/chappe

help:
	@echo "make run       install deps, build, make dev certs and key, start chappe (etc/chappe.yaml)"
	@echo "make test      install deps, build with ASan+UBSan, run unit and scenario tests"
	@echo "make           optimized build/chappe"
	@echo "make fuzz      bounded libFuzzer runs (FUZZ_SECONDS=60 each)"
	@echo "make format | lint | clean | bench | bench-crypto | bench-verify"

deps:
	@sh tools/deps.sh core

# --- release build -------------------------------------------------------------
build/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(REL_CFLAGS) $(CFLAGS) -c -o $@ $<

build/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(@D)
	$(CC) -I$(LLHTTP_INC) -DLLHTTP_STRICT_MODE=1 -O2 -g -w -c -o $@ $<

build/chappe: $(REL_OBJ) $(REL_LLHTTP)
	$(CC) $(REL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

# --- debug (sanitizers) build -----------------------------------------------------
build/debug/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DBG_CFLAGS) $(CFLAGS) -c -o $@ $<

build/debug/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(@D)
	$(CC) -I$(LLHTTP_INC) -DLLHTTP_STRICT_MODE=1 -O1 -g -w -fsanitize=address,undefined -c -o $@ $<

build/debug/libchappe.a: $(DBG_LIB_OBJ) $(DBG_LLHTTP)
	@rm -f $@
	ar rcs $@ $^

build/debug/chappe: $(DBG_OBJ) $(DBG_LLHTTP)
	$(CC) $(DBG_LDFLAGS) -pthread -o $@ $^ $(LIBS)

build/debug/tests/%: tests/unit/%.c build/debug/libchappe.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DBG_CFLAGS) -Wno-missing-prototypes -o $@ $< build/debug/libchappe.a \
		$(DBG_LDFLAGS) -lcmocka $(LIBS)

debug: build/debug/chappe

# --- tests ------------------------------------------------------------------------
test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) test-build
	@$(MAKE) --no-print-directory unit scenario

test-build: build/chappe build/debug/chappe $(UNIT_BIN) certs

unit: $(UNIT_BIN)
	@sh tools/run-unit.sh $(UNIT_BIN)

scenario: build/chappe build/debug/chappe certs
	CHAPPE_BIN=$(CURDIR)/build/debug/chappe CHAPPE_RELEASE_BIN=$(CURDIR)/build/chappe \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/scenario $(PYTEST_ARGS)

# --- running ----------------------------------------------------------------------
certs: certs/dev/ca.crt

certs/dev/ca.crt: certs/gen.sh
	sh certs/gen.sh certs/dev

var/relay.signing.key: | build/chappe
	@mkdir -p var
	./build/chappe keygen -o $@

run: deps
	@$(MAKE) --no-print-directory -j$(JOBS) build/chappe certs var/relay.signing.key
	./build/chappe run -c etc/chappe.yaml

# --- fuzzing ----------------------------------------------------------------------
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -std=gnu11 -g -O1 -fsanitize=fuzzer-no-link,address,undefined $(CPPFLAGS)
FUZZ_OBJ := $(patsubst src/%.c,build/fuzz/obj/%.o,$(LIB_SRC)) \
            $(patsubst $(LLHTTP_DIR)/%.c,build/fuzz/llhttp/%.o,$(LLHTTP_SRC))
FUZZ_BIN := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))

build/fuzz/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(CLANG) $(FUZZ_FLAGS) -c -o $@ $<

build/fuzz/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(@D)
	$(CLANG) $(FUZZ_FLAGS) -DLLHTTP_STRICT_MODE=1 -w -c -o $@ $<

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_OBJ)
	$(CLANG) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $^ $(LIBS)

# fuzz_dns includes src/dns.c to reach its static parsers: linked without dns.o.
build/fuzz/fuzz_dns: tests/fuzz/fuzz_dns.c $(filter-out build/fuzz/obj/dns.o,$(FUZZ_OBJ))
	$(CLANG) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $^ $(LIBS)

fuzz:
	@sh tools/deps.sh core fuzz
	@$(MAKE) --no-print-directory -j$(JOBS) $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do \
		name=$$(basename $$f); mkdir -p build/fuzz/corpus/$$name; \
		echo "== $$name ($(FUZZ_SECONDS)s)"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build/fuzz/corpus/$$name \
			tests/fuzz/corpus/$$name; \
	done

# --- hygiene ----------------------------------------------------------------------
FORMAT_FILES = $(SRC) $(HDR) $(UNIT_SRC) $(FUZZ_SRC) $(wildcard tests/unit/*.h)

format:
	@sh tools/deps.sh lint
	clang-format -i $(FORMAT_FILES)

lint:
	@sh tools/deps.sh lint
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
		--inline-suppr --std=c11 -D_GNU_SOURCE -Iinclude -I$(LLHTTP_INC) \
		--suppress=missingIncludeSystem src
	clang-tidy --quiet $(SRC) -- $(CPPFLAGS) -std=gnu11

bench:
	@sh tools/deps.sh core bench
	@$(MAKE) --no-print-directory -j$(JOBS) build/chappe certs
	bash bench/proxy.sh

bench-verify:
	@sh tools/deps.sh core bench
	@$(MAKE) --no-print-directory -j$(JOBS) build/chappe certs
	bash bench/verify.sh

bench-queue:
	@sh tools/deps.sh core bench
	@$(MAKE) --no-print-directory -j$(JOBS) build/chappe certs
	bash bench/queue.sh

bench-crypto:
	@sh tools/deps.sh core
	bash bench/crypto.sh

clean:
	rm -rf build

-include $(REL_OBJ:.o=.d) $(DBG_OBJ:.o=.d) $(wildcard build/fuzz/obj/*.d)
