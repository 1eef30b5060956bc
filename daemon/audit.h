/*
 * audit.h: honest charging. Every audit interval each section's allocated pages are compared with
 * what its session committed (plus the commit credit it used); pages written without a commit are
 * discarded and counted as an offence.
 *
 * Above the books and commit credit, beside the arbiter. Lock contract: every function runs with
 * the broker lock held and never takes it; the system calls made are fstat, lseek
 * (SEEK_DATA/SEEK_HOLE) and hole punches of the sections.
 */
#ifndef MB_AUDIT_H
#define MB_AUDIT_H

#include <stdbool.h>
#include <stdint.h>

#include "state.h"

/* The audit interval unless configured. Each audit costs one fstat per section under the broker
 * lock (a scan only of a section holding more than its commits); at 100 ms a client writing
 * 512 MiB where it committed nothing was disconnected after 0.3-0.6 s holding at most 22-58 MiB
 * beyond its commits, against 3-8.5 s and 235-512 MiB at 1000 ms (tests/hostile/
 * test_rogue_writer, 256 MiB budget). */
#define MB_AUDIT_DEFAULT_MS 100

/* Offences after which a client that writes to memory it never committed is disconnected. */
#define MB_MAX_OFFENCES 3

/*
 * Audits one session: every allocated extent of its section must lie on committed pages (or on
 * pages its used credit covers, or on MEM_RESET pages that are charged again when the budget
 * allows). The rest is discarded. forgive: an adoption ending (what the previous broker did not
 * see decommitted), logged but not an offence. *offender is set when s reached MB_MAX_OFFENCES.
 * Returns the bytes discarded.
 */
uint64_t mb_audit_session(mb_broker *b, mb_section *s, bool forgive, bool *offender);

/* Audits every live section (attached or detached) that is not adopting; the ids of up to max
 * offenders go to offenders. Returns the number written; *discarded gets the bytes discarded. */
int mb_audit_all(mb_broker *b, uint64_t *offenders, int max, uint64_t *discarded);

/*
 * The books' invariant, checked from the sections' side: the ledger's total equals the sum of what
 * the sections have charged. A breach is recorded (mb_books_violation) and a new one logged with
 * its path. Costs one pass over the sections; run at every audit.
 */
void mb_audit_books(mb_broker *b);

/* Ends s's adoption: its section's pages that no commit covers are discarded (forgiven), and it
 * is audited as usual from now on. */
void mb_audit_adoption_done(mb_broker *b, mb_section *s);

#endif
