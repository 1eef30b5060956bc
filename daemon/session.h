/*
 * session.h: one connected client, as the broker sees it.
 *
 * A session exists from the moment its nng pipe is added until the pipe is removed. It learns the
 * peer's pid/uid/gid from SO_PEERCRED at connect and its name at Hello; Hello also creates its
 * section. All fields are protected by the broker's lock.
 */
#ifndef MB_SESSION_H
#define MB_SESSION_H

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

typedef struct mb_session {
	RB_ENTRY(mb_session) by_pipe;
	RB_ENTRY(mb_session) by_id;
	uint32_t pipe_id; /* nng pipe id: the connection */
	uint64_t id;	  /* session id given at Hello, never reused while the broker runs */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	bool hello; /* Hello done: id, name and section are valid */
	char name[MB_WIRE_MAX_NAME + 1];
	int section_fd; /* -1 before Hello */
	int pidfd;	/* the peer process, for death detection; -1 if unavailable */
	uint8_t token[MB_WIRE_TOKEN_LEN];
	bool token_used;   /* the section was handed over (tokens are one-time) */
	bool adopted;	   /* the section is the client's own from before a broker restart */
	bool adopting;	   /* ... and the client is still re-registering: no audit yet */
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
	/* Reservation credit (credit.c): reservations and bytes the client may reserve by itself,
	 * unused or used but not yet reported; counted against its reservation quotas. */
	uint64_t reserve_count, reserve_bytes;
} mb_session;

/* A session for a new connection (no section yet). NULL on allocation failure. */
mb_session *mb_session_new(uint32_t pipe_id, pid_t pid, uid_t uid, gid_t gid);

/*
 * Frees a session: closes its memfd and frees the map. With discard, every page of the section is
 * punched out first, so the memory returns at once even if some process (a forked child of the
 * client) still holds the memfd; without it (broker shutdown) a live client keeps its mapped
 * memory intact. Returns the bytes that were charged (commits and credit), for the caller to
 * credit.
 */
uint64_t mb_session_free(mb_session *s, bool discard);

/* Bytes the broker knows the session committed (its region map). */
static inline uint64_t mb_session_committed(const mb_session *s)
{
	return (uint64_t)s->map.committed_pages * MB_PAGE_SIZE;
}

/* Bytes charged to the budget for the session: its commits and its commit credit. */
static inline uint64_t mb_session_charged(const mb_session *s)
{
	return mb_session_committed(s) + s->credit;
}

#endif
