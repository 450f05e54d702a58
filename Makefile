# kms: HSM-backed key management over mTLS gRPC.
#
#   make            build build/kmsd, build/kmsctl, build/kmsb and
#                   build/libkms-pkcs11.so
#   make run        install what is missing, build, set up $KMS_HOME, run kmsd
#   make test       install what is missing, build, run every test
#                   (OFFLINE=1: skip the tests that need the npm registry)
#   make bench      benchmarks (see bench/)
#
# SAN=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer into
# build/asan (make test does both builds).

CC ?= cc
BUILD ?= build
SAN ?= 0
KMS_HOME ?= $(CURDIR)/var
KMS_ADDR ?= 127.0.0.1:7443
export KMS_HOME KMS_ADDR

WARN = -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes \
	-Wmissing-prototypes -Wpointer-arith -Wno-unused-parameter -Werror
# Each directory sees only the headers it may use (docs/design.md): the
# device library its own, common/ its own, the daemon and the CLI common/
# and themselves, never each other.  -MMD tracks header dependencies.
P11_CFLAGS := $(shell pkg-config --cflags p11-kit-1 2>/dev/null)
CPPFLAGS += -D_GNU_SOURCE -MMD -MP
INC_KMSB = -Ikmsb
INC_COMMON = -Icommon
INC_KMS = -I. -Icommon -Ikms -I$(BUILD)/gen $(P11_CFLAGS)
INC_KMSCTL = -I. -Icommon -Ikmsctl -I$(BUILD)/gen
INC_PKCS11 = -Ipkcs11 -Icommon -I$(BUILD)/gen $(P11_CFLAGS)
INC_TESTS = -I. -Icommon -Ikms -Ikmsctl -Itests/unit -I$(BUILD)/gen \
	$(P11_CFLAGS)
INC_BENCH = -I. -Ibench -Ikms -Icommon -I$(BUILD)/gen $(P11_CFLAGS)
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -fno-strict-aliasing -fstack-protector-strong -fPIC $(WARN)
LDLIBS_COMMON = -lprotobuf-c -lssl -lcrypto -ljansson -linih -lpthread -ldl \
	-lmicrohttpd
LDLIBS_GRPC = -lgrpc -lgpr

ifeq ($(SAN),1)
CFLAGS += -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
else
CPPFLAGS += -D_FORTIFY_SOURCE=2
endif

GEN = $(BUILD)/gen
PROTO_C = $(GEN)/kms/v1/kms.pb-c.c $(GEN)/grpc/health/v1/health.pb-c.c
PROTO_H = $(PROTO_C:.c=.h)
# etcd's own API (proto/etcd/, docs/etcd.md), for the etcd store: kmsd only.
ETCD_PROTO_C = $(GEN)/etcd/etcdserver/etcdserverpb/rpc.pb-c.c \
	$(GEN)/etcd/mvcc/mvccpb/kv.pb-c.c $(GEN)/etcd/auth/authpb/auth.pb-c.c
ETCD_PROTO_H = $(ETCD_PROTO_C:.c=.h)

# What the daemon and the clients share.
COMMON_SRCS = common/kmserr.c common/algo.c common/log.c common/secret.c \
	common/inifile.c common/fileio.c common/names.c common/auditread.c \
	common/pubkey.c common/merkle.c common/note.c common/clock.c
# The daemon's modules, one per concern; the RPC layer alone sees gRPC.
KMS_LIB_SRCS = kms/metrics.c kms/config.c kms/policy.c kms/hsm.c kms/hsm_obj.c \
	kms/hsm_rv.c kms/keymeta.c \
	kms/store_token.c kms/keystore.c kms/keystore_life.c kms/keystore_ops.c \
	kms/audit.c kms/auditjson.c kms/auditopen.c kms/auditproof.c kms/audittree.c kms/auditkey.c kms/identity.c kms/tlsctx.c
LIB_SRCS = $(COMMON_SRCS) $(KMS_LIB_SRCS)
KMSD_SRCS = kms/rpc.c kms/etcd.c kms/etcdwatch.c kms/store_etcd.c kms/lead.c common/grpcbuf.c kms/rpclog.c kms/tlsfront.c kms/tlsfront_sock.c kms/reload.c kms/gate.c \
	kms/handlers.c kms/h_keys.c kms/h_crypto.c kms/h_bundle.c kms/h_service.c \
	kms/h_audit.c kms/watch.c \
	kms/health.c kms/healthsrv.c kms/storeopen.c kms/admin.c kms/main.c
CLIENT_SRCS = common/kmsclient.c common/grpcbuf.c kmsctl/conn.c kmsctl/output.c \
	kmsctl/cmdtab.c kmsctl/keycmd.c kmsctl/certcmd.c kmsctl/signcmd.c \
	kmsctl/wrapcmd.c kmsctl/whoamicmd.c kmsctl/auditlist.c \
	kmsctl/reportcmd.c kmsctl/auditcmd.c kmsctl/witnesscheck.c kmsctl/proofcmd.c \
	kmsctl/otacmd.c kmsctl/capgo.c kmsctl/capgocmd.c
KMSCTL_SRCS = kmsctl/kmsctl.c
# The PKCS#11 module (docs/pkcs11.md): its own files, the gRPC client and
# the parts of common/ it needs.  The parts that do not call kmsd are
# unit-tested on their own (P11_UNIT_SRCS).
P11_UNIT_SRCS = pkcs11/p11conf.c pkcs11/p11obj.c pkcs11/p11mech.c \
	pkcs11/p11err.c common/kmserr.c common/algo.c common/pubkey.c \
	common/inifile.c common/fileio.c common/secret.c
PKCS11_SRCS = pkcs11/module.c pkcs11/p11kms.c common/kmsclient.c common/grpcbuf.c \
	$(P11_UNIT_SRCS)
# kms OTA bundles (docs/bundle-format.md): the device verifier, which needs
# neither kms nor gRPC (only kmsb_crypto_openssl.c sees OpenSSL), and the
# producer that kmsctl ota links.
KMSB_SRCS = kmsb/kmsb_manifest.c kmsb/kmsb_verify.c kmsb/kmsb_hpke.c \
	kmsb/kmsb_keys.c kmsb/kmsb_file.c kmsb/kmsb_crypto_openssl.c
KMSB_SEAL_SRCS = kmsb/kmsb_seal.c

LIB_OBJS = $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
KMSD_OBJS = $(KMSD_SRCS:%.c=$(BUILD)/obj/%.o)
CLIENT_OBJS = $(CLIENT_SRCS:%.c=$(BUILD)/obj/%.o)
KMSCTL_OBJS = $(KMSCTL_SRCS:%.c=$(BUILD)/obj/%.o)
PROTO_OBJS = $(PROTO_C:$(GEN)/%.c=$(BUILD)/obj/gen/%.o)
ETCD_PROTO_OBJS = $(ETCD_PROTO_C:$(GEN)/%.c=$(BUILD)/obj/gen/%.o)
KMSB_OBJS = $(KMSB_SRCS:%.c=$(BUILD)/obj/%.o)
KMSB_SEAL_OBJS = $(KMSB_SEAL_SRCS:%.c=$(BUILD)/obj/%.o)
PKCS11_OBJS = $(PKCS11_SRCS:%.c=$(BUILD)/obj/%.o)
P11_UNIT_OBJS = $(P11_UNIT_SRCS:%.c=$(BUILD)/obj/%.o)

UNIT_TESTS = test_kmserr test_names test_config test_policy test_secret test_audit \
	test_merkle test_note \
	test_hsm test_keystore test_faults test_kmsb
UNIT_TESTS += test_capgo test_p11 test_store
UNIT_BINS = $(UNIT_TESTS:%=$(BUILD)/tests/%)

.PHONY: all deps deps-bench run test unit integration asan clean bench setup fuzz \
	man install
.SUFFIXES:
# The generated protobuf sources are kept, not deleted as intermediates.
.SECONDARY: $(PROTO_C) $(PROTO_H) $(ETCD_PROTO_C) $(ETCD_PROTO_H)

all: $(BUILD)/kmsd $(BUILD)/kmsctl $(BUILD)/kmsb $(BUILD)/libkms-pkcs11.so \
	$(BUILD)/p11drive

deps:
	@bash hsm-config/deps.sh

deps-bench:
	@bash hsm-config/deps.sh bench

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	@mkdir -p $(GEN)
	protoc-c --proto_path=proto --c_out=$(GEN) $<

$(BUILD)/obj/gen/%.o: $(GEN)/%.c $(PROTO_H) $(ETCD_PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -I$(GEN) $(CFLAGS) -Wno-missing-prototypes -c -o $@ $<

$(BUILD)/obj/kmsb/%.o: kmsb/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(INC_KMSB) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/common/%.o: common/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(INC_COMMON) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/kms/%.o: kms/%.c $(PROTO_H) $(ETCD_PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(INC_KMS) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/kmsctl/%.o: kmsctl/%.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(INC_KMSCTL) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/pkcs11/%.o: pkcs11/%.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(INC_PKCS11) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/bench/%.o: bench/%.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(INC_BENCH) $(CFLAGS) -c -o $@ $<

$(BUILD)/libkms.a: $(LIB_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/libkmsb.a: $(KMSB_OBJS) $(KMSB_SEAL_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/kmsb: $(BUILD)/obj/kmsb/kmsb_main.o $(KMSB_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ -lcrypto

# kmsd reads OTA manifests with the device library's parser (no crypto).
$(BUILD)/kmsd: $(KMSD_OBJS) $(PROTO_OBJS) $(ETCD_PROTO_OBJS) \
	$(BUILD)/obj/kmsb/kmsb_manifest.o $(BUILD)/libkms.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_GRPC) $(LDLIBS_COMMON) -lsystemd

$(BUILD)/kmsctl: $(KMSCTL_OBJS) $(CLIENT_OBJS) $(PROTO_OBJS) $(BUILD)/libkms.a \
	$(BUILD)/libkmsb.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_GRPC) $(LDLIBS_COMMON)

# The PKCS#11 module exports C_GetFunctionList alone; it stays loaded
# once loaded (-z nodelete), since gRPC's threads may outlive C_Finalize.
$(BUILD)/libkms-pkcs11.so: $(PKCS11_OBJS) $(PROTO_OBJS) \
	pkcs11/libkms-pkcs11.map
	$(CC) $(LDFLAGS) -shared -Wl,--version-script=pkcs11/libkms-pkcs11.map \
		-Wl,-z,nodelete -Wl,-z,defs -o $@ $(filter %.o,$^) \
		$(LDLIBS_GRPC) -lprotobuf-c -lssl -lcrypto -linih -lpthread

# Drives the module through its function list for the tests and the
# benchmark (tests/p11drive.c): what the signing tools cannot show.
$(BUILD)/p11drive: tests/p11drive.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(P11_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< \
		-lcrypto -lpthread -ldl

# The load generator of the benchmarks.
$(BUILD)/kmsload: $(BUILD)/obj/bench/kmsload.o $(PROTO_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_GRPC) $(LDLIBS_COMMON)

# The OTA verifier's in-process throughput (bench/ota.sh).
$(BUILD)/kmsbspeed: $(BUILD)/obj/bench/kmsbspeed.o $(KMSB_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ -lcrypto

# One audit record's encoding, kms/auditjson.c against jansson.
$(BUILD)/auditfmt: bench/auditfmt.c tests/unit/auditjson_ref.h \
    $(BUILD)/libkms.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(INC_TESTS) $(CFLAGS) $(LDFLAGS) -o $@ $< \
		$(BUILD)/libkms.a -ljansson -lcrypto

# One audit batch seal in SoftHSM2: the seal key and its session copy.
$(BUILD)/sealcost: $(BUILD)/obj/bench/sealcost.o $(BUILD)/obj/bench/p11util.o
	$(CC) $(LDFLAGS) -o $@ $^ -ldl

$(BUILD)/p11raw: $(BUILD)/obj/bench/p11raw.o $(BUILD)/obj/bench/p11util.o
	$(CC) $(LDFLAGS) -o $@ $^ -lpthread -ldl

# The floor: a bare gRPC + PKCS#11 Sign server on kmsd's configuration
# (bench/floor.c), the reference kmsd is measured against.  It reads that
# configuration with kms/config.c.
$(BUILD)/floor: $(BUILD)/obj/bench/floor.o $(BUILD)/obj/bench/p11util.o \
    $(PROTO_OBJS) $(BUILD)/libkms.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_GRPC) $(LDLIBS_COMMON)

# Fills a token with keys as kmsd's keystore makes them (bench/kmsfill.c).
# It writes the metadata documents with kmsd's own codec.
$(BUILD)/kmsfill: $(BUILD)/obj/bench/kmsfill.o $(BUILD)/obj/bench/p11util.o \
    $(BUILD)/obj/kms/keymeta.o $(BUILD)/obj/common/algo.o \
    $(BUILD)/obj/common/kmserr.o
	$(CC) $(LDFLAGS) -o $@ $^ -ljansson -lcrypto -ldl

# The fault-injecting PKCS#11 module used by the unit tests.
$(BUILD)/p11fault.so: tests/mock-p11/p11fault.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(P11_CFLAGS) $(CFLAGS) -shared -o $@ $< -ldl

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libkms.a $(BUILD)/libkmsb.a \
	$(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(INC_TESTS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libkms.a \
		$(BUILD)/libkmsb.a -lcmocka $(LDLIBS_COMMON)

# The store interface on both backends: the etcd client is kmsd's (RPC
# layer), so this test links it, etcd's generated code and gRPC.
$(BUILD)/tests/test_store: tests/unit/test_store.c $(BUILD)/obj/kms/etcd.o \
    $(BUILD)/obj/kms/etcdwatch.o $(BUILD)/obj/kms/store_etcd.o \
    $(BUILD)/obj/kms/lead.o $(BUILD)/obj/common/grpcbuf.o \
    $(ETCD_PROTO_OBJS) $(BUILD)/libkms.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(INC_TESTS) $(CFLAGS) $(LDFLAGS) -o $@ $< \
		$(BUILD)/obj/kms/etcd.o $(BUILD)/obj/kms/etcdwatch.o \
		$(BUILD)/obj/kms/store_etcd.o $(BUILD)/obj/kms/lead.o \
		$(BUILD)/obj/common/grpcbuf.o \
		$(ETCD_PROTO_OBJS) $(BUILD)/libkms.a -lcmocka $(LDLIBS_GRPC) \
		$(LDLIBS_COMMON)

# The bundle format lives with the client; its test links it.
$(BUILD)/tests/test_capgo: tests/unit/test_capgo.c \
    $(BUILD)/obj/kmsctl/capgo.o $(BUILD)/libkms.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(INC_TESTS) $(CFLAGS) $(LDFLAGS) -o $@ $< \
		$(BUILD)/obj/kmsctl/capgo.o $(BUILD)/libkms.a \
		-lcmocka $(LDLIBS_COMMON)

# The module's pure parts, and the module itself through dlopen.
$(BUILD)/tests/test_p11: tests/unit/test_p11.c $(P11_UNIT_OBJS) \
	$(BUILD)/libkms-pkcs11.so
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(INC_PKCS11) $(CFLAGS) $(LDFLAGS) -o $@ $< \
		$(P11_UNIT_OBJS) -lcmocka -lcrypto -linih -ldl -lpthread

unit: $(UNIT_BINS) $(BUILD)/p11fault.so
	@ASAN_OPTIONS=fast_unwind_on_malloc=0 \
	    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp BUILD=$(BUILD) \
	    bash tests/run-unit.sh $(UNIT_TESTS)

# libFuzzer targets (clang), run for FUZZ_SECONDS each.
FUZZ_SECONDS ?= 30
FUZZ_DIR = build/fuzz
FUZZ_AUDIT_SRCS = tests/fuzz/fuzz_audit_verify.c common/auditread.c \
	common/kmserr.c common/algo.c common/pubkey.c common/log.c \
	common/merkle.c common/note.c

$(FUZZ_DIR)/fuzz_audit_verify: $(FUZZ_AUDIT_SRCS) common/auditread.h
	@mkdir -p $(dir $@)
	clang -g -O1 -fsanitize=fuzzer,address,undefined \
		-DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -D_GNU_SOURCE -Icommon \
		-o $@ $(FUZZ_AUDIT_SRCS) -ljansson -lcrypto

FUZZ_POLICY_SRCS = tests/fuzz/fuzz_policy.c kms/policy.c common/names.c \
	common/inifile.c common/fileio.c common/secret.c common/kmserr.c \
	common/algo.c common/log.c

$(FUZZ_DIR)/fuzz_policy: $(FUZZ_POLICY_SRCS) kms/policy.h common/names.h
	@mkdir -p $(dir $@)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Ikms -Icommon \
		-o $@ $(FUZZ_POLICY_SRCS) -linih -lcrypto

FUZZ_CAPGO_SRCS = tests/fuzz/fuzz_capgo.c kmsctl/capgo.c common/kmserr.c

$(FUZZ_DIR)/fuzz_capgo: $(FUZZ_CAPGO_SRCS) kmsctl/capgo.h tests/unit/capgo_kat.h
	@mkdir -p $(dir $@)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Icommon \
		-Ikmsctl -Itests/unit -o $@ $(FUZZ_CAPGO_SRCS) -lcrypto

# The bundle manifest and statement parsers, and the streaming verifier
# on arbitrary input.
FUZZ_KMSB_SRCS = tests/fuzz/fuzz_kmsb_manifest.c $(KMSB_SRCS)

$(FUZZ_DIR)/fuzz_kmsb_manifest: $(FUZZ_KMSB_SRCS) $(wildcard kmsb/*.h)
	@mkdir -p $(dir $@)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
		-Ikmsb -o $@ $(FUZZ_KMSB_SRCS) -lcrypto

# The signed-note and checkpoint parsers, and the Merkle proof verifiers.
FUZZ_NOTE_SRCS = tests/fuzz/fuzz_note.c common/note.c common/merkle.c \
	common/kmserr.c
FUZZ_PROOF_SRCS = tests/fuzz/fuzz_proof.c common/merkle.c common/kmserr.c

$(FUZZ_DIR)/fuzz_note: $(FUZZ_NOTE_SRCS) common/note.h common/merkle.h
	@mkdir -p $(dir $@)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Icommon \
		-o $@ $(FUZZ_NOTE_SRCS) -lcrypto

$(FUZZ_DIR)/fuzz_proof: $(FUZZ_PROOF_SRCS) common/merkle.h
	@mkdir -p $(dir $@)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Icommon \
		-o $@ $(FUZZ_PROOF_SRCS) -lcrypto

# The identity rules on DER certificates.
FUZZ_IDENTITY_SRCS = tests/fuzz/fuzz_identity.c kms/identity.c \
	common/kmserr.c

$(FUZZ_DIR)/fuzz_identity: $(FUZZ_IDENTITY_SRCS) kms/identity.h
	@mkdir -p $(dir $@)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Ikms \
		-Icommon -o $@ $(FUZZ_IDENTITY_SRCS) -lcrypto

fuzz: $(FUZZ_DIR)/fuzz_audit_verify $(FUZZ_DIR)/fuzz_policy \
	$(FUZZ_DIR)/fuzz_kmsb_manifest $(FUZZ_DIR)/fuzz_capgo \
	$(FUZZ_DIR)/fuzz_note $(FUZZ_DIR)/fuzz_proof $(FUZZ_DIR)/fuzz_identity
	@mkdir -p $(FUZZ_DIR)/corpus-audit $(FUZZ_DIR)/corpus-policy \
		$(FUZZ_DIR)/corpus-kmsb $(FUZZ_DIR)/corpus-capgo \
		$(FUZZ_DIR)/corpus-note $(FUZZ_DIR)/corpus-proof \
		$(FUZZ_DIR)/corpus-identity
	$(FUZZ_DIR)/fuzz_audit_verify -max_total_time=$(FUZZ_SECONDS) \
		-max_len=4096 -print_final_stats=1 $(FUZZ_DIR)/corpus-audit \
		tests/fuzz/corpus-audit
	$(FUZZ_DIR)/fuzz_policy -max_total_time=$(FUZZ_SECONDS) \
		-max_len=4096 -print_final_stats=1 $(FUZZ_DIR)/corpus-policy \
		tests/fuzz/corpus-policy
	$(FUZZ_DIR)/fuzz_kmsb_manifest -max_total_time=$(FUZZ_SECONDS) \
		-max_len=8192 -print_final_stats=1 $(FUZZ_DIR)/corpus-kmsb \
		tests/fuzz/corpus-kmsb
	$(FUZZ_DIR)/fuzz_capgo -max_total_time=$(FUZZ_SECONDS) \
		-max_len=4096 -print_final_stats=1 $(FUZZ_DIR)/corpus-capgo \
		tests/fuzz/corpus-capgo
	$(FUZZ_DIR)/fuzz_note -max_total_time=$(FUZZ_SECONDS) \
		-max_len=8192 -print_final_stats=1 $(FUZZ_DIR)/corpus-note \
		tests/fuzz/corpus-note
	$(FUZZ_DIR)/fuzz_proof -max_total_time=$(FUZZ_SECONDS) \
		-max_len=4096 -print_final_stats=1 $(FUZZ_DIR)/corpus-proof \
		tests/fuzz/corpus-proof
	$(FUZZ_DIR)/fuzz_identity -max_total_time=$(FUZZ_SECONDS) \
		-max_len=8192 -print_final_stats=1 $(FUZZ_DIR)/corpus-identity \
		tests/fuzz/corpus-identity

asan:
	$(MAKE) BUILD=build/asan SAN=1 all

# OFFLINE=1 skips the tests that need the npm registry (Capgo's CLI).
OFFLINE ?= 0
integration: all
	@if [ "$(OFFLINE)" != 0 ]; then echo "integration: OFFLINE=1, the" \
	    "Capgo interoperability tests (npm) are skipped"; fi
	@BUILD=$(BUILD) KMS_TEST_OFFLINE=$(OFFLINE) bash tests/run-integration.sh

# Every test: unit tests and the integration suite on the normal build,
# then the integration suite again on the ASan+UBSan build.
test: deps
	$(MAKE) all unit
	$(MAKE) integration
	$(MAKE) BUILD=build/asan SAN=1 all unit
	$(MAKE) BUILD=build/asan SAN=1 integration
	$(MAKE) fuzz FUZZ_SECONDS=10

setup: deps all
	@bash hsm-config/setup.sh

run: deps all
	@bash hsm-config/run.sh

bench: deps-bench all $(BUILD)/kmsload $(BUILD)/p11raw $(BUILD)/kmsfill \
    $(BUILD)/floor
	@bash bench/run.sh

# Man pages from their scdoc sources; kmsctl(1)'s commands come from
# kmsctl's own command table (packaging/mkman.sh).
VERSION := $(shell sed -n 's/^\#define KMS_VERSION "\(.*\)"/\1/p' common/version.h)
MAN_PAGES = $(BUILD)/man/kmsd.8 $(BUILD)/man/kmsctl.1 $(BUILD)/man/kmsd.conf.5

$(BUILD)/man/%: docs/man/%.scd packaging/mkman.sh $(BUILD)/kmsctl \
	packaging/kmsd.conf.example common/version.h
	@mkdir -p $(dir $@)
	bash packaging/mkman.sh $< $@ $(BUILD)/kmsctl packaging/kmsd.conf.example \
		$(VERSION)

man: $(MAN_PAGES)

# make install PREFIX=/usr/local DESTDIR=/tmp/stage: the programs, the
# PKCS#11 module when it was built, the man pages, the systemd unit and
# its user, bash completion, and example configurations.
PREFIX ?= /usr/local
BINDIR = $(PREFIX)/bin
SBINDIR = $(PREFIX)/sbin
LIBDIR = $(PREFIX)/lib
MANDIR = $(PREFIX)/share/man
DATADIR = $(PREFIX)/share/kms
UNITDIR = $(PREFIX)/lib/systemd/system
SYSUSERSDIR = $(PREFIX)/lib/sysusers.d
COMPLETIONDIR = $(PREFIX)/share/bash-completion/completions

install: all man
	install -D -m 0755 $(BUILD)/kmsd $(DESTDIR)$(SBINDIR)/kmsd
	install -D -m 0755 $(BUILD)/kmsctl $(DESTDIR)$(BINDIR)/kmsctl
	install -D -m 0755 $(BUILD)/kmsb $(DESTDIR)$(BINDIR)/kmsb
	if [ -f $(BUILD)/libkms-pkcs11.so ]; then \
		install -D -m 0755 $(BUILD)/libkms-pkcs11.so \
			$(DESTDIR)$(LIBDIR)/pkcs11/libkms-pkcs11.so; fi
	install -D -m 0644 $(BUILD)/man/kmsd.8 $(DESTDIR)$(MANDIR)/man8/kmsd.8
	install -D -m 0644 $(BUILD)/man/kmsctl.1 $(DESTDIR)$(MANDIR)/man1/kmsctl.1
	install -D -m 0644 $(BUILD)/man/kmsd.conf.5 \
		$(DESTDIR)$(MANDIR)/man5/kmsd.conf.5
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|@SBINDIR@|$(SBINDIR)|g' packaging/kmsd.service \
		>$(DESTDIR)$(UNITDIR)/kmsd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/kmsd.service
	install -D -m 0644 packaging/kms.sysusers $(DESTDIR)$(SYSUSERSDIR)/kms.conf
	install -D -m 0644 packaging/kmsctl.bash-completion \
		$(DESTDIR)$(COMPLETIONDIR)/kmsctl
	install -D -m 0644 packaging/kmsd.conf.example \
		$(DESTDIR)$(DATADIR)/kmsd.conf.example
	install -D -m 0644 packaging/softhsm2.conf.example \
		$(DESTDIR)$(DATADIR)/softhsm2.conf.example
	install -D -m 0644 hsm-config/policy.conf \
		$(DESTDIR)$(DATADIR)/policy.conf.example

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj $(BUILD)/tests -name '*.d' 2>/dev/null)
