/*
 * credit.h: commits and decommits the client makes by itself against the broker's commit credit
 * (common/mb_credit.h), and the Sync that reports them.
 *
 * The rules that keep the broker's books right:
 *  - A local commit takes credit from the shared word first, then opens the pages, and records
 *    the range as pending (map_lock held throughout, so VirtualQuery never sees half of it).
 *  - A local decommit is only done for pages inside one pending range: they are closed, punched
 *    out of the section, and only then is their credit given back (the broker's audit reads the
 *    section before the word, so it never sees pages it cannot account for).
 *  - Before a round trip that needs the broker to know pending pages are committed (MEM_RESET, a
 *    commit overlapping them), those pages are reported first. A decommit or release the broker
 *    carries out instead takes them off the list and gives their credit back once the broker has
 *    punched them: it needs no report.
 *  - A decommit or release of pages the broker already booked is local too (mb_credit_free):
 *    closed, punched, pending commits in the range forgotten, and the free recorded for the next
 *    Sync, which books frees before reservations and commits. Any other round trip that changes
 *    pages or reservations reports pending frees first (mb_credit_report_frees).
 *  - One Sync is in flight at a time (sync_lock); a thread that needs pages reported waits for it.
 *  - Reservations work alike: one made against the reservation credit lives in the local map and
 *    on a pending list until a Sync reports it (before the commits in it, in the same message). A
 *    round trip about it (a commit, decommit, MEM_RESET or release the broker must carry out)
 *    reports it first; releasing it before it was reported is local (closed, punched, and only
 *    then both credits given back).
 */
#ifndef MB_CLIENT_CREDIT_H
#define MB_CLIENT_CREDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "membroker.h"

typedef struct mb_client mb_client;

/* Returned when an operation cannot be done locally: the caller asks the broker. Never returned
 * to the library's users. */
#define MB_CREDIT_REMOTE ((HRESULT)1)

/* A local commit not yet reported to the broker. */
typedef struct mb_local_commit {
	uintptr_t address;
	size_t size;
	int level;
} mb_local_commit;

/* A reservation made locally against reservation credit, not yet reported to the broker. */
typedef struct mb_local_reserve {
	uintptr_t address;
	size_t size;
} mb_local_reserve;

/* A decommit or release of pages the broker knew of, done locally, not yet reported. */
typedef struct mb_local_free {
	uintptr_t address;
	size_t size; /* 0 for a release */
	bool release;
	size_t bytes; /* committed bytes the broker still charges for it (the bound's measure) */
} mb_local_free;

/* Maps the credit word of the client's section (after the section arrived). No credit is used
 * if this fails: every commit then takes a round trip, as without credit. */
void mb_credit_attach(mb_client *c);

/* Unmaps the word (teardown in the owning process). */
void mb_credit_detach(mb_client *c);

/* Forgets pending and in-flight reports: after a reconnection, re-registration covers them. */
void mb_credit_reset(mb_client *c);

/*
 * Commits [addr, addr+size) locally if the pages are all uncommitted, inside one reservation, and
 * credit allows (reporting pending commits first to make room). S_OK with *out set when done,
 * MB_CREDIT_REMOTE when the caller must ask the broker, or a failure HRESULT.
 */
HRESULT mb_credit_commit(mb_client *c, uintptr_t addr, size_t size, uint8_t code, int level,
			 uintptr_t *out);

/*
 * Decommits [addr, addr+size) locally when it lies inside one pending local commit. S_OK when
 * done; MB_CREDIT_REMOTE when the caller must ask the broker (any pending pages in the range were
 * reported first).
 */
HRESULT mb_credit_decommit(mb_client *c, uintptr_t addr, size_t size);

/*
 * Before a decommit or release the broker will carry out: takes the pending local commits in
 * [lo, hi) off the list (map_lock held for writing) and returns their bytes, which the caller gives
 * back with mb_credit_refund once the broker has punched the pages. The broker need not hear of
 * them: it punches the whole range anyway and credits only what it counted. SIZE_MAX when it cannot
 * (pages in an unanswered Sync, or a split with the list full): the caller then runs mb_credit_sync
 * and tries again.
 */
size_t mb_credit_forget_locked(mb_client *c, uintptr_t lo, uintptr_t hi);

/* Gives bytes of credit back, unless the session changed (a reconnection) since session_id. */
void mb_credit_refund(mb_client *c, size_t bytes, uint64_t session_id);

/* Reports pending pages of [addr, addr+size) (a planned, non-empty page range) before a round
 * trip that needs the broker to know them (MEM_RESET, an overlapping commit). */
void mb_credit_settle(mb_client *c, uintptr_t addr, size_t size);

/* Reports every pending local reservation and commit (and lets the broker top both credits up). */
HRESULT mb_credit_sync(mb_client *c);

/*
 * Reserves size bytes (a page multiple; at want, 64 KiB aligned, or anywhere when want is 0)
 * against the reservation credit, without a round trip: the address space is placed, the region
 * enters the local map, and the reservation is reported in a later Sync. S_OK with *out;
 * MB_CREDIT_REMOTE when the credit does not cover it (the caller asks the broker); or the
 * failure a remote reserve would give for the address (MB_E_INVALID_ADDRESS, E_OUTOFMEMORY).
 */
HRESULT mb_credit_reserve(mb_client *c, uintptr_t want, size_t size, DWORD protect, uintptr_t *out);

/*
 * Releases the reservation at base locally when the broker has not heard of it yet: its pages are
 * closed and punched out of the section, its pending local commits forgotten and their commit
 * credit, like the reservation credit, given back. S_OK when done; MB_CREDIT_REMOTE otherwise (a
 * reported reservation, or one in a Sync in flight, which is then waited for).
 */
HRESULT mb_credit_release(mb_client *c, uintptr_t base);

/*
 * Decommits [addr, addr+size) (MEM_DECOMMIT) or releases the reservation at addr (MEM_RELEASE, size
 * 0) locally although the broker knows of the pages: they are closed and punched out of the
 * section through this process's descriptor, the map updated, pending local commits in the range
 * forgotten (their credit given back), and the free recorded for the next Sync, where the broker
 * books it and the charge of the pages becomes credit again. Within the bound (mb_credit.h): the
 * committed bytes of unreported frees stay at most the credit target the broker published, and
 * at most MB_WIRE_MAX_SYNC_FREES of them; a free that would pass it is reported by a Sync first.
 * While the client holds no commit credit (taken back under pressure, or used up) a local free
 * is reported at once. S_OK when done; MB_CREDIT_REMOTE when the caller must ask the broker (no
 * credit word, a Win32 error the round-trip path reports, a failed punch).
 */
HRESULT mb_credit_free(mb_client *c, uintptr_t addr, size_t size, DWORD free_type);

/* Before a round trip that changes reservations or page states: reports local frees first, so
 * the broker never applies a later request before an earlier free (waits for a Sync in flight
 * that carries frees, too). */
void mb_credit_report_frees(mb_client *c);

/* Before a round trip about the reservation containing addr: reports it first if the broker has
 * not heard of it (waiting for a Sync in flight that carries it). */
void mb_credit_report_reservation(mb_client *c, uintptr_t addr);

#endif
