/*
 * log.h: the broker's log. Plain lines on stderr ("membrokerd: warning: ..."), with a syslog
 * priority prefix ("<4>") when stderr is the journal, so journald keeps the levels.
 */
#ifndef MB_LOG_H
#define MB_LOG_H

#include <syslog.h>

/* Messages above this priority (LOG_DEBUG > LOG_INFO > ...) are dropped. Default LOG_INFO. */
void mb_log_set_level(int priority);

/* Parses "debug", "info", "notice", "warning", "error". Returns the priority or -1. */
int mb_log_parse_level(const char *name);

void mb_log(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * A rate limit for one kind of message that a client can cause at will (refusals, offences,
 * hang-ups): at most MB_LOG_BURST such lines a second are written, the rest are counted, and the
 * next line written says how many were left out. One static limiter per call site (or per kind);
 * thread-safe.
 */
#define MB_LOG_BURST 20
typedef struct mb_log_limit {
	long long window;	       /* second of the current window (CLOCK_MONOTONIC) */
	unsigned written;	       /* lines written in it */
	unsigned long long suppressed; /* lines left out since the last one written */
} mb_log_limit;
#define MB_LOG_LIMIT_INIT                                                                          \
	{                                                                                          \
		0, 0, 0                                                                            \
	}

/* true when a line may be written now; *suppressed is then what was left out before it. */
int mb_log_allow(mb_log_limit *l, unsigned long long *suppressed);

/* mb_log under the limit l. */
void mb_log_limited(mb_log_limit *l, int priority, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* MESSAGE_IDs of the journal entries operators filter on (journalctl MESSAGE_ID=...). */
#define MB_MSGID_REFUSED "8dab179f78ba4db487ec2ecb165e48c8" /* a commit refused: E_OUTOFMEMORY */
#define MB_MSGID_TIMEOUT "aab4ca06b0934ffeac83a39c4656e8b9" /* a waiting commit timed out */
#define MB_MSGID_RECLAIM "36e0a725b0374033bce292e005fb5d3c" /* MEM_RESET pages reclaimed */
#define MB_MSGID_OFFENCE                                                                           \
	"884f1970068d4fee98d87d0a9f3c3bcb" /* a client wrote uncommitted memory                    \
					    */

/*
 * An event about a client, with structured fields: in the journal as MESSAGE_ID,
 * MEMBROKER_CLIENT_PID, MEMBROKER_CLIENT_UID, MEMBROKER_LEVEL, MEMBROKER_BYTES and
 * MEMBROKER_HRESULT; on plain stderr the same fields follow the message. Rate-limited together
 * (mb_log_limit: MB_LOG_BURST a second; the rest are counted in the broker's metrics).
 */
void mb_log_event(int priority, const char *message_id, int pid, unsigned uid, int level,
		  unsigned long long bytes, unsigned hresult, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

#endif
