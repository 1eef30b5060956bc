/*
 * restore.h: a broker started with descriptors from systemd's store (fdstore.h) takes its
 * sections back before it serves anyone.
 *
 * For every stored section memfd:
 *
 *   - its owner process exited meanwhile (its stored pidfd says so): the section is freed at once
 *     (punched, closed, removed from the store);
 *   - the books snapshot (snapshot.h) has it, and the memfd is the one the snapshot saw: it is
 *     restored exactly, in state RESTORED: reservations, page states, commit and reservation
 *     credit (the credit word in the section is left as the client has it), its attach token, so
 *     its client re-attaches with its session id and token and carries on;
 *   - otherwise (no snapshot: the broker crashed; or a snapshot that is refused or stale): it is
 *     restored without books, charged what its memfd really holds (its data extents, SEEK_DATA),
 *     at most what the budget has left. Its client's re-attach is refused (the token is gone), so
 *     it hands its memfd back and registers what it holds through the usual checks; the restored
 *     record then ends without a punch. The credit word is emptied.
 *
 * The budget is the snapshot's when the configured budget did not change since (a live
 * set-budget survives a restart), else the configured one, never below what the restored books
 * hold. Sections of the snapshot whose memfd is not in the store are dropped (their clients
 * register again). A refused snapshot is logged with its reason; the broker then goes on as after
 * a crash. The snapshot is consumed: emptied and removed from the store, so a crash later cannot
 * restore stale books from it.
 *
 * Runs once at start, before the server, under the broker lock.
 */
#ifndef MB_RESTORE_H
#define MB_RESTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fdstore.h"
#include "state.h"

typedef struct mb_restore_stats {
	uint32_t exact;	  /* sections restored with their books from the snapshot */
	uint32_t bounded; /* sections restored without books, charged what they hold */
	uint32_t freed;	  /* sections whose process had exited: freed */
	uint32_t dropped; /* snapshot sections without a memfd, unusable descriptors */
	bool snapshot;	  /* a snapshot was found */
	bool snapshot_used;
	uint64_t charged; /* the ledger after the restore */
	uint64_t budget;
} mb_restore_stats;

/*
 * Takes the n descriptors fds[] named names[] (as sd_listen_fds_with_names gives them; every one
 * is consumed: kept by a section or closed) and restores b's sections from them.
 * configured_budget is what the options and configuration give now (b's budget on entry).
 */
void mb_restore(mb_broker *b, mb_fdstore *st, const int *fds, char **names, size_t n,
		uint64_t configured_budget, mb_restore_stats *stats);

#endif
