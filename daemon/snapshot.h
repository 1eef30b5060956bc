/*
 * snapshot.h: the books snapshot, what a stopping broker leaves in systemd's file descriptor store
 * (FDNAME "snapshot", fdstore.h) so that the next one restores every section exactly
 * (restore.h).
 *
 * The file (a memfd) is a 24-byte header followed by one packed membroker.snapshot.v1.Snapshot
 * (proto/snapshot.proto):
 *
 *     0   8  magic "MBSNAP\0\0"
 *     8   4  format version (MB_SNAPSHOT_VERSION), little endian
 *     12  4  CRC-32 (zlib) of the payload, little endian
 *     16  8  payload length, little endian
 *     24     payload
 *
 * so a truncated file (its length disagrees), a corrupted one (the CRC) and one of another version
 * are told apart from a good one before the payload is decoded, and the decoded books are checked
 * again (regions aligned and apart, page runs inside their regions, committed bytes, the total
 * charged, the budget) before anything is restored. A refused snapshot is logged with its reason
 * and the broker falls back to what the sections really hold.
 *
 * Encoding runs with the broker lock held (it reads the state and calls fstat on the memfds);
 * decoding touches no broker state. Neither takes a lock.
 */
#ifndef MB_SNAPSHOT_H
#define MB_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "state.h"

#define MB_SNAPSHOT_MAGIC   "MBSNAP\0\0"
#define MB_SNAPSHOT_VERSION 1
#define MB_SNAPSHOT_HEADER  24
/* A snapshot larger than this is refused unread (a million reservations encode in about 30 MiB). */
#define MB_SNAPSHOT_MAX_PAYLOAD ((uint64_t)1 << 30)

/* A MEM_RESET range of the snapshot, with the reclaim queue it was in. */
typedef struct mb_snapshot_reset {
	uint64_t section_id, address, pages;
	int level;
} mb_snapshot_reset;

/* A decoded, checked snapshot. */
typedef struct mb_snapshot {
	uint64_t budget, configured_budget, charged, next_id;
	uint64_t reclaimed_bytes, offences;
	/* Sections with their books (map, credit, tokens, owner), state MB_SECTION_RESTORED,
	 * without memfd, pidfd or group yet. A taker sets its entry to NULL; mb_snapshot_free
	 * frees what is left. */
	mb_section **sections;
	uint64_t *inodes; /* of each section's memfd at the stop */
	size_t nsections;
	mb_snapshot_reset *resets; /* in reclaim order within each level */
	size_t nresets;
} mb_snapshot;

/*
 * Encodes b's books, header included, into a malloc'd buffer (*out, *len). The configured budget
 * is recorded beside the budget in force. Caller holds the lock. 0 or -ENOMEM.
 */
int mb_snapshot_encode(const mb_broker *b, uint64_t configured_budget, uint8_t **out, size_t *len);

/*
 * Decodes and checks a whole snapshot file (header included). section_size is this broker's.
 * 0 and *out, or -EINVAL with the reason in why (truncated, corrupt, another version, or books
 * that do not hold together), -ENOMEM.
 */
int mb_snapshot_decode(const uint8_t *buf, size_t len, uint64_t section_size, mb_snapshot **out,
		       char *why, size_t whylen);

/* Frees a decoded snapshot and the sections nobody took. NULL is fine. */
void mb_snapshot_free(mb_snapshot *snap);

/* A memfd holding buf, for the descriptor store. fd or -errno. */
int mb_snapshot_to_memfd(const uint8_t *buf, size_t len);

/* Reads a whole snapshot file from fd. 0 and a malloc'd *buf, or -errno / -EINVAL (too large)
 * with the reason in why. */
int mb_snapshot_read_fd(int fd, uint8_t **buf, size_t *len, char *why, size_t whylen);

#endif
