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
 *  - Before any round trip that concerns pending pages (decommit, release, reset), those pages
 *    are reported first, so the broker never handles pages it does not know are committed.
 *  - One Sync is in flight at a time (sync_lock); a thread that needs pages reported waits for it.
 */
#ifndef MB_CLIENT_CREDIT_H
#define MB_CLIENT_CREDIT_H

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

/* Reports pending pages of [addr, addr+size) (size 0: the whole reservation at addr) before a
 * round trip about them. */
void mb_credit_settle(mb_client *c, uintptr_t addr, size_t size);

/* Reports every pending local commit (and lets the broker top the credit up). */
HRESULT mb_credit_sync(mb_client *c);

#endif
