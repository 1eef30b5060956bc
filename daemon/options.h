/*
 * options.h: membrokerd's command line.
 */
#ifndef MB_OPTIONS_H
#define MB_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "mb_size.h"

typedef struct mb_options {
	const char *listen; /* --listen URL, or NULL for $MEMBROKER_ADDRESS / the default */
	const char *budget; /* --budget SIZE as given, or NULL for the default */
	const char *config; /* --config PATH, or NULL for the default file (optional) */
	int log_level;	    /* syslog priority; -1 = not given */
	int contexts;	    /* nng contexts: requests in flight inside the broker */
	bool ceilings_set;
	uint32_t ceiling_permille[3]; /* --ceilings T,A,P in percent (may have one decimal) */
	bool waits_set;
	uint32_t wait_ms[3]; /* --waits T,A,P in milliseconds */
	uint32_t audit_ms;   /* --audit-interval; 0 = not given */
	bool commit_credit_set;
	uint64_t commit_credit;	      /* --commit-credit in bytes (at most MB_MAX_COMMIT_CREDIT) */
	uint32_t offender_refusal_ms; /* --offender-refusal; 0 = not given */
} mb_options;

/* mb_parse_triple (the --ceilings and --waits syntax) lives in config.h, shared with the file. */

/*
 * Parses argv. Returns 0 to run, 1 when --help or --version was printed (exit 0), -1 after printing
 * a usage error (exit 2).
 */
int mb_options_parse(int argc, char **argv, mb_options *o);

/* mb_parse_size lives in common/mb_size.h, shared with membrokerctl. */

#endif
