/*
 * section.h: a section, the broker's first-class record of one client's memory.
 *
 * A section is created at Hello and lives until its owner process exits, its client says goodbye
 * (mb_disconnect), or it is ended for offences. It is not a connection: a connection (conn.h)
 * attaches to it, and when the connection drops while the process lives, the section is detached
 * and stays whole, charged and audited until the client re-attaches (with its session id and the
 * one-time attach token) or the process exits. It holds:
 *
 *   - its id (the session id the client sees) and its memfd (memfd.h);
 *   - its owner: pid and pidfd (for the death watch), uid, gid, the name presented at Hello, and
 *     its group;
 *   - its books: reservations and page states (the region map, with the level each page was
 *     committed at, and while its client re-registers a handed-back section, its claims),
 *     MEM_RESET ranges queued for reclaim, commit credit and the shared credit word;
 *   - its state (below) and the tokens for the fd hand-over and for re-attaching.
 *
 * Lock contract: every field is protected by the broker lock; nothing here takes a lock.
 */
#ifndef MB_SECTION_H
#define MB_SECTION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <bsd/sys/tree.h>

#include "mb_regmap.h"
#include "mb_wire.h"

/* A range of address space the client mapped by itself and reported (AcquiredVirtualAddressSpace).
 */
typedef struct mb_mapped {
	uint64_t address, size;
} mb_mapped;

typedef enum mb_section_state {
	MB_SECTION_ATTACHED, /* a connection works on it */
	MB_SECTION_DETACHED, /* its connection dropped while the process lives: kept whole, charged
			      */
	MB_SECTION_RESTORED, /* brought back from the store by a restarted broker, not attached yet
			      */
	MB_SECTION_FREED,    /* punched and closed: only in flight while it leaves the registry */
} mb_section_state;

struct mb_conn;

typedef struct mb_section {
	RB_ENTRY(mb_section) by_id;
	uint64_t id; /* session id given at Hello, never reused while the broker runs */
	mb_section_state state;
	struct mb_conn *conn; /* attached connection, NULL unless MB_SECTION_ATTACHED */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	char name[MB_WIRE_MAX_NAME + 1];
	int section_fd; /* the memfd */
	int pidfd;	/* the owner process, for death detection; -1 if unavailable */
	uint8_t token[MB_WIRE_TOKEN_LEN];	 /* fd hand-over, one-time */
	bool token_used;			 /* the section was handed over */
	uint8_t attach_token[MB_WIRE_TOKEN_LEN]; /* re-attach, rotated at every attach */
	bool adopted;  /* the section is the client's own from before a broker restart */
	bool adopting; /* ... and the client is still re-registering: no audit yet */
	uint64_t adopt_deadline_ms; /* AdoptDone must come by then (CLOCK_MONOTONIC) */
	/* Re-adoption without a store (readopt.h): pages claimed and not booked yet (an upper
	 * bound: the client's own decommits and releases of claimed pages are not subtracted);
	 * claimed pages refused and not reported to the client yet, until refused_deadline_ms;
	 * and what the booking of the claims did. */
	uint64_t claimed_pages, refused_pages;
	uint64_t refused_deadline_ms;
	uint64_t readopt_booked, readopt_refused;
	mb_regmap map;	   /* reservations and commit state, the broker's authority */
	time_t connected;  /* CLOCK_MONOTONIC seconds */
	int max_level;	   /* highest critical level it committed at (reclaim order) */
	int group;	   /* index in the broker's configuration, -1 for none */
	uint32_t offences; /* writes to memory it had not committed */
	uint32_t resets;   /* entries it has in the broker's MEM_RESET lists */
	mb_mapped *mapped; /* sorted by address */
	uint32_t nmapped, mapped_cap;
	uint64_t mapped_bytes;
	/* Commit credit (credit.c): bytes charged to the budget for commits the client may make
	 * by itself, unused or used but not yet reported; and the shared word (page 0 of the
	 * section, mapped here), NULL when none is mapped. */
	uint64_t credit;
	struct mb_credit_word *credit_word;
	/* Its credit target is commit_credit << credit_growth: raised at each Sync that says the
	 * credit ran out, back to 0 when the credit is taken back (credit.c). */
	unsigned credit_growth;
	/* Reservation credit (credit.c): reservations and bytes the client may reserve by itself,
	 * unused or used but not yet reported; counted against its reservation quotas. */
	uint64_t reserve_count, reserve_bytes;
	/* Restored after a broker crash without books (restore.h): the bytes its memfd really
	 * held then, charged until its client hands the memfd back and registers what it holds
	 * through the usual checks, or its process exits. 0 for every other section. */
	uint64_t held;
	bool stored; /* its memfd and pidfd are in systemd's descriptor store (fdstore.h) */
} mb_section;

/* A section record for an owner (no memfd yet: section_fd -1, pidfd -1). NULL without memory. */
mb_section *mb_section_new(pid_t pid, uid_t uid, gid_t gid);

/*
 * Frees a section record: closes its memfd and pidfd and frees the map. With discard, every page
 * of the memfd is punched out first, so the memory returns at once even if some process (a forked
 * child of the client) still holds the memfd; without it (broker shutdown) a live client keeps
 * its mapped memory intact. The caller refunds its charge first (books.h).
 */
void mb_section_free(mb_section *s, bool discard);

/* Bytes the broker knows the section committed (its region map). */
static inline uint64_t mb_section_committed(const mb_section *s)
{
	return (uint64_t)s->map.committed_pages * MB_PAGE_SIZE;
}

/* Bytes charged to the budget for the section: its commits, its commit credit, and what a section
 * restored without books holds. */
static inline uint64_t mb_section_charged(const mb_section *s)
{
	return mb_section_committed(s) + s->credit + s->held;
}

/* Its state in words ("attached", ...), for logs and the admin listing. */
const char *mb_section_state_name(mb_section_state st);

#endif
