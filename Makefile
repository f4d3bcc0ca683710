# relock — see README.md. `make run` starts a server; `make test` runs
# every test (installing the tools they need when run as root); `make
# chaos` runs the long fault campaigns (CHAOS_ROUNDS kills of a single
# server, default 25; CLUSTER_CHAOS_KILLS kills of a cluster's leader and
# CLUSTER_CHAOS_CUTS cuts of its Raft link, default 20 each).

GO      ?= go
BIN     := bin/relock
FUZZTIME ?= 30s
CHAOS_ROUNDS ?= 25
CLUSTER_CHAOS_KILLS ?= 20
CLUSTER_CHAOS_CUTS ?= 20

.PHONY: all build run test test-race integration chaos unit fuzz lint fmt vet bench bench-stall bench-cluster bench-redis deps clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/relock

# A release binary: static, stripped, version stamped (relock --version,
# INFO's relock_version), e.g. bin/relock-v0.1.0-linux-amd64. VERSION is
# what git describe says: the tag at HEAD, or between tags the last tag,
# the commits since and the commit (v0.1.0-208-g462d427); v0.0.0-dev when
# there is no tag or no git. COMMIT is the commit built. GOOS=darwin GOARCH=arm64 make release cross-builds.
.PHONY: release
VERSION ?= $(shell git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null || echo v0.0.0-dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
GOOS    ?= $(shell $(GO) env GOOS)
GOARCH  ?= $(shell $(GO) env GOARCH)
release:
	CGO_ENABLED=0 GOOS=$(GOOS) GOARCH=$(GOARCH) $(GO) build -trimpath -buildvcs=auto \
		-ldflags "-s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)" \
		-o bin/relock-$(VERSION)-$(GOOS)-$(GOARCH) ./cmd/relock
	@echo bin/relock-$(VERSION)-$(GOOS)-$(GOARCH)

run: build
	./$(BIN) server $(ARGS)

# The whole suite: lint, then every package with the race detector
# (integration tests build and drive the real binary), then the
# Kubernetes manifests against the API types (a module of its own, so
# that relock's go.mod does not carry k8s.io/api).
test: deps lint
	$(GO) test -race -count=1 -timeout 8m ./...
	$(MAKE) k8s-validate

.PHONY: k8s-validate
k8s-validate:
	cd deploy/k8s/validate && $(GO) vet ./... && $(GO) test -count=1 ./...

test-race: test

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

integration: deps
	$(GO) test -race -count=1 -timeout 8m ./integration/

# The fault campaigns with more faults than the 3 that `make test` runs:
# a single server killed CHAOS_ROUNDS times (integration/chaos_test.go),
# a 3-node cluster whose leader is killed CLUSTER_CHAOS_KILLS times
# (integration/cluster_chaos_test.go), and one whose leader's Raft link is
# cut CLUSTER_CHAOS_CUTS times, each node in a network namespace of its
# own (integration/cluster_partition_linux_test.go; as root, skipped
# without the privilege); RELOCK_CHAOS_SEED=n repeats a run.
chaos: deps
	RELOCK_CHAOS_ROUNDS=$(CHAOS_ROUNDS) RELOCK_CLUSTER_CHAOS_KILLS=$(CLUSTER_CHAOS_KILLS) \
		RELOCK_CLUSTER_CHAOS_CUTS=$(CLUSTER_CHAOS_CUTS) \
		$(GO) test -race -count=1 -timeout 30m -v -run '^(TestChaos|TestCluster_Chaos|TestCluster_PartitionedLeader)' ./integration/

# Every fuzz target for FUZZTIME each (seed corpora also run in `make test`).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseInt$$' -fuzztime $(FUZZTIME) ./resp/
	$(GO) test -run '^$$' -fuzz '^FuzzScanOptions$$' -fuzztime $(FUZZTIME) ./resp/
	$(GO) test -run '^$$' -fuzz '^FuzzGlobMatch$$' -fuzztime $(FUZZTIME) ./commands/
	$(GO) test -run '^$$' -fuzz '^FuzzExec$$' -fuzztime $(FUZZTIME) ./commands/
	$(GO) test -run '^$$' -fuzz '^FuzzFrameScanner$$' -fuzztime $(FUZZTIME) ./resp/
	$(GO) test -run '^$$' -fuzz '^FuzzParseRequest$$' -fuzztime $(FUZZTIME) ./resp/
	$(GO) test -run '^$$' -fuzz '^FuzzParseKey$$' -fuzztime $(FUZZTIME) ./locktable/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZTIME) ./persist/
	$(GO) test -run '^$$' -fuzz '^FuzzParseWAL$$' -fuzztime $(FUZZTIME) ./persist/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeSnapshot$$' -fuzztime $(FUZZTIME) ./replica/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEntry$$' -fuzztime $(FUZZTIME) ./replica/

lint: vet
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

fmt:
	gofmt -w .

# Tools the tests drive (redis-cli, …); installs what is missing when root.
deps:
	@scripts/deps.sh

clean:
	rm -rf bin

# README.md's flag tables and the man page docs/relock.1 are generated from
# the command line (cmd/relock/docs.go); tests fail when they are stale.
.PHONY: docs man
docs:
	$(GO) test -count=1 -run '^(TestREADME_FlagTablesUpToDate|TestManPage)$$' ./cmd/relock/ -update

man:
	$(GO) test -count=1 -run '^TestManPage$$' ./cmd/relock/ -update

# relock vs Redis side by side (the performance targets); writes bench/results.md and .json,
# then runs the cluster and stall scenarios below.
bench:
	bench/run.sh

# Only the stall scenario (the no-stall target; about a minute, no Redis):
# a bystander's PING latency under each attack; writes
# bench/results-stall.md and .json.
bench-stall:
	bench/run.sh stall

# Only the side-by-side comparison with Redis.
bench-redis:
	bench/run.sh redis

# Only the cluster scenario (the cluster targets; about 3 minutes,
# plus building etcd the first time): relock 3-node vs etcd 3-node on one
# core; writes bench/results-cluster.md and .json.
bench-cluster:
	bench/run.sh cluster

# A bare 3-node Raft commit on this machine: hashicorp/raft (relock's
# stack) against a minimal etcd raft loop with a parallel leader write
# (bench/raftfloor/README.md; docs/raft.md, "What bounds a round").
.PHONY: bench-raft-floor
bench-raft-floor:
	bench/raftfloor/run.sh 3
