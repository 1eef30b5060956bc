/*
 * config.h: membrokerd's configuration file (INI, parsed with inih), default
 * /etc/membroker/membroker.conf. Every key is optional; a missing file means built-in defaults.
 * See systemd/membroker.conf for the documented example.
 *
 *   [broker]        listen, socket_mode, socket_group, budget, ceilings, waits,
 *                   audit_interval_ms, log_level, commit_credit
 *   [access]        uids, gids: who may use the broker (empty: whoever can open the socket)
 *   [limits]        client_max, client_max_reservations, client_max_reserved,
 *                   sessions_per_uid, client_max_mapped, offender_refusal_ms
 *   [group.NAME]    uids, gids, names, name_uids, max, reserve    (up to MB_MAX_GROUPS)
 *
 * Lists are comma separated; uids and gids take numbers or ranges (1000-1999); names take shell
 * patterns (fnmatch) matched against the name a client presents in Hello.
 */
#ifndef MB_CONFIG_H
#define MB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MB_MAX_GROUPS	  64
#define MB_MAX_IDS	  32
#define MB_MAX_PATTERNS	  16
#define MB_DEFAULT_CONFIG "/etc/membroker/membroker.conf"
/* Commit credit per client when nothing says otherwise: 64 commits of 64 KiB without a round trip.
 */
#define MB_DEFAULT_COMMIT_CREDIT ((uint64_t)4 << 20)
/* Most commit credit one client may be granted (a bound on what the budget can hold unused). */
#define MB_MAX_COMMIT_CREDIT ((uint64_t)1 << 30)

typedef struct mb_id_range {
	uint32_t lo, hi; /* inclusive */
} mb_id_range;

typedef struct mb_id_list {
	int n;
	mb_id_range r[MB_MAX_IDS];
} mb_id_list;

typedef struct mb_group_conf {
	char name[64];
	mb_id_list uids; /* sessions of these uids belong to the group */
	mb_id_list gids; /* or of these gids */
	int npatterns;
	char patterns[MB_MAX_PATTERNS][64]; /* or presenting a matching name ... */
	mb_id_list name_uids; /* ... if their uid is listed here (empty: names are not honoured) */
	uint64_t max;	      /* bytes the group may commit together; 0 = no limit */
	uint64_t reserve;     /* bytes kept for the group that others cannot take */
} mb_group_conf;

typedef struct mb_config {
	char listen[512];
	uint32_t socket_mode;	/* 0 = default (0660) */
	char socket_group[64];	/* empty = the daemon's group */
	mb_id_list access_uids; /* may connect (root always may); both empty: no check */
	mb_id_list access_gids; /* primary or supplementary group */
	char budget[64];	/* as written (a size or a percentage); empty = default */
	bool ceilings_set, waits_set;
	uint32_t ceiling_permille[3];
	uint32_t wait_ms[3];
	uint32_t audit_ms;		  /* 0 = default */
	int log_level;			  /* -1 = default */
	uint64_t commit_credit;		  /* bytes per client; 0 = none (see credit.h) */
	uint64_t client_max;		  /* bytes one client may commit; 0 = no limit */
	uint32_t client_max_reservations; /* 0 = default */
	uint32_t sessions_per_uid;	  /* connections one uid may hold; 0 = default */
	uint64_t client_max_mapped;   /* address space a client may map by itself; 0 = no limit */
	uint64_t client_max_reserved; /* address space a client may reserve; 0 = default (16 TiB) */
	uint32_t offender_refusal_ms; /* a disconnected offender's uid refused first; 0 = default */
	int ngroups;
	mb_group_conf groups[MB_MAX_GROUPS];
} mb_config;

/* Parses "a,b,c" into three values; percent=true reads percentages (0 < v <= 100, one decimal,
 * non-decreasing) into permille, else milliseconds (<= 600000). Returns 0 or -1. */
int mb_parse_triple(const char *s, bool percent, uint32_t out[3]);

/* Built-in defaults (everything unset). */
void mb_config_defaults(mb_config *c);

/*
 * Reads path into *c (starting from defaults). Returns 0, -ENOENT when the file does not exist
 * (then *c holds the defaults), or -EINVAL with "path:line: reason" in err. *c is only valid on 0
 * or -ENOENT. Sizes with a percent sign are kept as text for the caller (budget) or refused.
 */
int mb_config_load(const char *path, mb_config *c, char *err, size_t errlen);

/* true if id is in the list. */
bool mb_id_list_has(const mb_id_list *l, uint32_t id);

/* Parses "1000,1002-1010" (numbers only) into l. Returns 0 or -1. */
int mb_id_list_parse(const char *s, mb_id_list *l);

/*
 * The group a client belongs to: by presented name (where the group's name_uids allow its uid),
 * else by uid, else by gid; first match in file order. -1 for none.
 */
int mb_config_match_group(const mb_config *c, uid_t uid, gid_t gid, const char *name);

#endif
