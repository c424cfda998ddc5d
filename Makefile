# flashgrab — developer entry points. `make help` lists them.
#
# Services: `run`, `test` and `bench` first make sure Redis and MariaDB answer on 127.0.0.1
# (see .ci/services.sh: use running ones, else start throwaway ones, else install them).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Go may live outside PATH on a fresh machine (/usr/local/go is where Debian-less installs put it).
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
# Tools that tests or generators start by name must find the same Go.
ifneq ($(findstring /,$(GO)),)
export PATH := $(patsubst %/,%,$(dir $(GO))):$(PATH)
endif

# Where the services are. The ports are the knobs: the server's ADDRS/DSN and the tests'
# FLASHGRAB_TEST_* follow them unless set explicitly (.ci/services.sh then takes the port to
# make sure of from ADDRS/DSN).
redis_port := $(or $(FLASHGRAB_REDIS_PORT),6379)
mysql_port := $(or $(FLASHGRAB_MYSQL_PORT),3306)
FLASHGRAB_REDIS_ADDRS ?= 127.0.0.1:$(redis_port)
FLASHGRAB_MYSQL_DSN ?= root@tcp(127.0.0.1:$(mysql_port))/flashgrab?parseTime=true
FLASHGRAB_TEST_REDIS ?= 127.0.0.1:$(redis_port)
FLASHGRAB_TEST_MYSQL ?= root@tcp(127.0.0.1:$(mysql_port))/
export FLASHGRAB_REDIS_ADDRS FLASHGRAB_MYSQL_DSN FLASHGRAB_TEST_REDIS FLASHGRAB_TEST_MYSQL

SERVICES := bash .ci/services.sh

TEST_TIMEOUT ?= 15m
# One benchmark run stays within a few minutes; raise BENCHTIME (e.g. 10s or 100000x) for
# steadier numbers, narrow BENCH to a regexp to run fewer.
BENCH ?= .
BENCHTIME ?= 2s
BENCH_TIMEOUT ?= 10m
FUZZTIME ?= 30s
# make chaos writes its table here too (go test shows a passing test's output only with -v).
CHAOS_TABLE ?= bin/chaos.txt
CHAOS_TIMEOUT ?= 30m

.PHONY: help run run-cluster cluster demo build test vet lint bench chaos fuzz services services-status stop-services clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  make %-15s %s\n", $$1, $$2 }'

# The dev JWT secret survives restarts in .flashgrab-dev/secret (git-ignored, 0600), so tokens
# stay valid and `flashgrab token` in another shell finds it without an export.
run: services ## start the dev server (serve --dev) against local Redis and MariaDB
	$(GO) run ./cmd/flashgrab serve --dev

# One seed address is enough: serve asks the node and finds it is a cluster.
run-cluster: services ## start the dev server on a local 3-master Redis Cluster (make cluster) and MariaDB
	seed=$$($(SERVICES) cluster); FLASHGRAB_REDIS_ADDRS=$$seed $(GO) run ./cmd/flashgrab serve --dev

# Tests that need a cluster start their own; those that only read and write keys use the one
# FLASHGRAB_TEST_CLUSTER names instead: FLASHGRAB_TEST_CLUSTER=$(make -s cluster) make test
cluster: ## start a local 3-master Redis Cluster (ports 7001-7003, AOF) and print its seed address
	@$(SERVICES) cluster

demo: ## run the README walkthrough against the server `make run` started (fresh ids each time)
	$(GO) run ./cmd/flashgrab demo

build: ## build bin/flashgrab
	$(GO) build -trimpath -o bin/flashgrab ./cmd/flashgrab

test: services ## go vet, then all tests with the race detector
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

vet: ## go vet ./...
	$(GO) vet ./...

# lint needs no services. `go mod tidy -diff` keeps go.mod and go.sum exactly what the imports
# need (direct requirements in their own block). deadcode is pinned by the tool directive in
# go.mod and runs WITHOUT -test: a function counts as live only when the flashgrab binary can
# reach it, so code that only tests call is reported too; test helpers in _test.go files are not
# analysed at all. Findings kept on purpose (test support shared across packages) and the ones
# still to remove (TODO(issue 8.5)) are listed, with reasons, in .ci/deadcode.allow; anything
# else fails, and so does an entry that no longer matches.
lint: ## gofmt lists nothing, go vet, go mod tidy -diff, deadcode (.ci/deadcode.allow)
	@unformatted="$$("$$($(GO) env GOROOT)/bin/gofmt" -l .)"; \
	if [[ -n "$$unformatted" ]]; then \
		echo "gofmt would change these files (run: gofmt -w <file>):"; echo "$$unformatted"; exit 1; \
	fi
	$(GO) vet ./...
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }
	@GO=$(GO) bash .ci/deadcode.sh

bench: services ## end-to-end benchmarks in ./bench/ and the load generator's (BENCH=regexp, BENCHTIME=2s)
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime=$(BENCHTIME) -timeout $(BENCH_TIMEOUT) ./bench/ ./internal/loadgen/

# The full chaos suite (internal/chaos): every fault under load in modes aof and none, a 30 s
# MySQL cut; `make test` runs the short version. Without -race, so the load is a real one.
chaos: services ## the full chaos suite: real faults under load, the table printed (and in bin/chaos.txt)
	@mkdir -p $(dir $(CHAOS_TABLE))
	FLASHGRAB_CHAOS=full FLASHGRAB_CHAOS_TABLE=$(abspath $(CHAOS_TABLE)) $(GO) test -count=1 -run '^TestChaos$$' -timeout $(CHAOS_TIMEOUT) ./internal/chaos/
	@cat $(CHAOS_TABLE)

# One -fuzz target per `go test` invocation: Go refuses to fuzz several at once. A -fuzz that
# matches nothing passes silently, so first make sure the target exists. Each entry is
# package:target.
FUZZ_TARGETS := ./pay/alipay/:FuzzParseNotify ./pay/wechat/:FuzzParseNotify ./api/:FuzzDecode

fuzz: ## fuzz the payment notify parsers and the API's strict JSON decoder for FUZZTIME (30s) each
	@for entry in $(FUZZ_TARGETS); do \
		pkg=$${entry%%:*}; target=$${entry#*:}; \
		if ! names="$$($(GO) test -list "^$$target\$$" "$$pkg" 2>&1)"; then echo "$$names"; exit 1; fi; \
		grep -qx "$$target" <<<"$$names" || { echo "no $$target in $$pkg"; exit 1; }; \
		echo "$(GO) test -run '^$$' -fuzz '^$$target\$$' -fuzztime $(FUZZTIME) $$pkg"; \
		$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) "$$pkg" || exit 1; \
	done

services: ## make sure Redis and MariaDB answer (start throwaway ones if needed)
	@$(SERVICES) ensure

services-status: ## show what answers and which throwaway instances run
	@$(SERVICES) status

stop-services: ## stop the throwaway Redis/MariaDB started by make (never system services)
	@$(SERVICES) stop

clean: ## remove build output
	rm -rf bin/
