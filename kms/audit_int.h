/*
 * audit_int.h: the audit log's state and the functions its three files
 * share: audit.c (the writer, group commit, checkpoints), auditopen.c
 * (opening a chain: the tail, the seals, the HSM anchor, new chains) and
 * auditproof.c (inclusion and consistency proofs).  Not for other modules:
 * they use audit.h.  docs/design.md describes the write path.
 */
#ifndef KMS_AUDIT_INT_H
#define KMS_AUDIT_INT_H

#include <sys/types.h>

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>
#include <openssl/sha.h>

#include "audit.h"
#include "merkle.h"

struct metrics;
struct audit_tree;

#define SEG_NAME_DIGITS 20
#define SEG_SUFFIX ".jsonl"
#define SEALS_FILE "seals"
#define SEAL_MAGIC "kms-audit-seal-v1\n"
#define ANCHOR_MAGIC "kms-audit-anchor-v1"
#define SEAL_LEN 32
#define TAIL_WINDOW (64 * 1024)	/* first read of a segment's end */

/*
 * Group commit: a record is formatted and chained under the lock and put
 * in the pending batch; whichever caller finds no flush under way becomes
 * the flusher, writes the whole batch and fdatasyncs it once, outside the
 * lock, while later records gather in the next batch.  Each caller
 * returns once its own record is durable.  A failed flush takes the batch
 * back out of the file, and every record chained after it (the pending
 * batch too) fails with it: the generation counter tells their callers.
 */
struct audit {
	struct metrics *metrics;	/* NULL: off; set before use */
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* a flush finished */
	char dir[4096];			/* the chain directory */
	char chain[256];
	size_t segment_max;
	int fd;				/* current segment, O_APPEND; flusher only */
	off_t seg_size;			/* flusher only */
	uint64_t next_seq;
	char prev[SHA256_DIGEST_LENGTH * 2 + 1];
	uint64_t durable_seq;		/* every record up to here is on disk */
	uint64_t gen;			/* bumped when a flush fails */
	char *pend;			/* the pending batch */
	size_t pend_len, pend_cap;
	char *spare;			/* a written batch's buffer, for reuse */
	size_t spare_cap;
	uint64_t pend_first, pend_last;
	char pend_base[SHA256_DIGEST_LENGTH * 2 + 1];	/* prev before it */
	uint64_t pend_base_since;	/* since_cp before it */
	int lock_fd;			/* flock'd: this chain is ours */
	int nosync;			/* benchmarks only */
	uint64_t nbatches, nflushed;	/* group commit: writes and records */

	/* The writer thread and the replies waiting for it. */
	pthread_t writer;
	pthread_cond_t wcond;		/* records are pending, or stop */
	int writer_running, wstop;
	struct audit_waiter *whead, *wtail;
	/* Told of each durable batch (audit_set_notify); lock. */
	void (*notify)(void *arg, uint64_t durable_seq);
	void *notify_arg;

	/* Checkpoints. */
	struct audit_signer signer;	/* sign == NULL: none */
	char key_fpr[SHA256_DIGEST_LENGTH * 2 + 1];
	char *key_pem;
	char origin[256 + 8];		/* "kms/CHAIN", also the key's name */
	uint32_t key_id;		/* its signed-note key ID */
	uint64_t since_cp;		/* records no checkpoint covers yet */
	uint64_t cp_req, cp_tried, cp_done;	/* checkpoints asked for, tried, made */
	uint64_t cp_fails;		/* failed attempts */
	uint64_t cp_seq;		/* the record of the last one */
	char *cp_note;			/* the last signed checkpoint */
	uint64_t cp_size;		/* its tree size */
	pthread_t timer;
	int timer_running, stopping;
	pthread_cond_t timer_cond;

	/*
	 * The Merkle tree over the records (audittree.h): the writer thread
	 * hashes each batch once it is durable and alone touches the tree;
	 * tree_size (under the lock) is what it has published.
	 */
	struct audit_tree *tree;
	uint64_t tree_size;
	uint64_t base;			/* seq of the chain's first record */
	int has_notes;			/* signed-note checkpoints on disk */

	/* The signed checkpoints by tree size, for proofs (lock). */
	struct cp_entry {
		uint64_t size;
		char *note;
	} *cps;
	size_t ncps, capcps;
	struct timespec forced;		/* the last checkpoint asked for */

	/* Batch seals (CHAIN/seals), the writer's: see make_seal. */
	int seal_fd;
	off_t seal_size;
	uint8_t seal_prev[SEAL_LEN];
};

/* The HSM anchor: the last checkpoint this instance signed. */
struct anchor {
	int present;
	char chain[256];
	uint64_t base, size;
	uint8_t root[MERKLE_HASH_LEN];
};

/* Shared by the three files; each is described where it is defined. */
int audit_anchor_parse(const char *v, struct anchor *an);
int audit_checkpoint_now(struct audit *a);
int audit_cp_remember(struct audit *a, uint64_t size, const char *note);
int audit_fsync_dir(const char *dir);
void audit_line_hash(const char *line, size_t len, char *out);
int audit_mkdir_p(const char *path);
int audit_open_segment(struct audit *a, uint64_t first_seq);
int audit_queue_record(struct audit *a, const struct audit_event *ev, json_t *cp,
    uint64_t *my);
int audit_seal_mac(struct audit *a, const uint8_t prev[SEAL_LEN], const char *buf,
    size_t len, uint8_t mac[SEAL_LEN]);
int audit_unhex32(const char *s, uint8_t out[32]);
int audit_wait_durable(struct audit *a, uint64_t my, uint64_t gen);
int audit_write_file(const char *path, const char *text);
void *audit_timer_main(void *arg);
void *audit_writer_main(void *arg);
const char *audit_cp_find(struct audit *a, uint64_t size);

#endif /* KMS_AUDIT_INT_H */
