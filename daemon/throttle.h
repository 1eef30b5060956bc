/*
 * throttle.h: uids that lost a session for writing memory they had not committed.
 *
 * Disconnecting an offending process is not enough: a new process of the same uid connects at once
 * and writes again. So the offender's uid is refused new sessions for a while, longer at each
 * repeat: first_ms (the configured offender_refusal_ms, by default MB_THROTTLE_FIRST_MS) after
 * the first disconnect, doubled at each one that follows,
 * at most MB_THROTTLE_MAX_MS; a uid without a strike for MB_THROTTLE_FORGET_MS starts over. The
 * uid is the unit because it is the unit of isolation between clients (README, "Run each sandbox
 * under a uid of its own"): the broker cannot tell one of its processes from another.
 *
 * Pure policy: times are passed in, nothing here makes a system call or takes a lock (the broker
 * keeps its throttle under its lock). A full table forgets the entry whose refusal ends first.
 */
#ifndef MB_THROTTLE_H
#define MB_THROTTLE_H

#include <stdint.h>
#include <sys/types.h>

#define MB_THROTTLE_FIRST_MS  5000
#define MB_THROTTLE_MAX_MS    300000
#define MB_THROTTLE_FORGET_MS 600000
#define MB_THROTTLE_UIDS      64

typedef struct mb_throttle {
	struct {
		uid_t uid;
		uint32_t strikes;
		uint64_t until_ms; /* new sessions refused before this */
		uint64_t last_ms;  /* the latest strike */
	} e[MB_THROTTLE_UIDS];
	int n;
	uint32_t first_ms; /* the first refusal; 0 = MB_THROTTLE_FIRST_MS */
} mb_throttle;

/* An empty throttle (a zeroed one is empty too). */
void mb_throttle_init(mb_throttle *t);

/* uid's process was disconnected for offences at now_ms. Returns how long (ms) the uid's new
 * sessions are refused from now. */
uint64_t mb_throttle_strike(mb_throttle *t, uid_t uid, uint64_t now_ms);

/* Milliseconds uid must still wait before a new session, 0 if it may have one now. */
uint64_t mb_throttle_wait(const mb_throttle *t, uid_t uid, uint64_t now_ms);

#endif
