/*
 * config.c: the configuration file, through inih.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <ini.h>

#include "log.h"
#include "mb_size.h"
#include "throttle.h"

typedef struct parse_ctx {
	mb_config *c;
	char reason[256]; /* first error only: inih reports that one's line */
} parse_ctx;

void mb_config_defaults(mb_config *c)
{
	memset(c, 0, sizeof(*c));
	c->log_level = -1;
	c->commit_credit = MB_DEFAULT_COMMIT_CREDIT;
}

bool mb_id_list_has(const mb_id_list *l, uint32_t id)
{
	for (int i = 0; i < l->n; i++)
		if (id >= l->r[i].lo && id <= l->r[i].hi)
			return true;
	return false;
}

int mb_parse_triple(const char *s, bool percent, uint32_t out[3])
{
	const char *p = s;

	if (s == NULL)
		return -1;
	for (int i = 0; i < 3; i++) {
		char *end;
		if (!isdigit((unsigned char)*p))
			return -1;
		errno = 0;
		double v = strtod(p, &end);
		if (errno != 0 || end == p)
			return -1;
		if (percent) {
			if (!(v > 0 && v <= 100))
				return -1;
			out[i] = (uint32_t)(v * 10 + 0.5);
			if (i > 0 && out[i] < out[i - 1])
				return -1;
		} else {
			if (!(v >= 0 && v <= 600000) || v != (double)(uint32_t)v)
				return -1;
			out[i] = (uint32_t)v;
		}
		p = end;
		if (i < 2) {
			if (*p != ',')
				return -1;
			p++;
		}
	}
	return *p == '\0' ? 0 : -1;
}

static int parse_u32(const char **p, uint32_t *out)
{
	char *end;
	unsigned long v;

	if (!isdigit((unsigned char)**p))
		return -1;
	errno = 0;
	v = strtoul(*p, &end, 10);
	if (errno != 0 || v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	*p = end;
	return 0;
}

int mb_id_list_parse(const char *s, mb_id_list *l)
{
	const char *p = s;

	l->n = 0;
	while (*p == ' ')
		p++;
	if (*p == '\0')
		return 0;
	for (;;) {
		mb_id_range r;
		while (*p == ' ')
			p++;
		if (l->n >= MB_MAX_IDS || parse_u32(&p, &r.lo) != 0)
			return -1;
		r.hi = r.lo;
		if (*p == '-') {
			p++;
			if (parse_u32(&p, &r.hi) != 0 || r.hi < r.lo)
				return -1;
		}
		l->r[l->n++] = r;
		while (*p == ' ')
			p++;
		if (*p == '\0')
			return 0;
		if (*p++ != ',')
			return -1;
	}
}

static int fail(parse_ctx *x, const char *fmt, const char *a, const char *b)
{
	if (x->reason[0] == '\0')
		snprintf(x->reason, sizeof(x->reason), fmt, a, b);
	return 0;
}

static int size_value(parse_ctx *x, const char *key, const char *v, uint64_t *out)
{
	if (strchr(v, '%') != NULL || mb_parse_size(v, 0, out) != 0)
		return fail(x, "%s: '%s' is not a size (bytes with K, M, G or T)", key, v);
	return 1;
}

static mb_group_conf *group_for(parse_ctx *x, const char *section)
{
	const char *name = section + strlen("group.");
	mb_config *c = x->c;

	for (int i = 0; i < c->ngroups; i++)
		if (strcmp(c->groups[i].name, name) == 0)
			return &c->groups[i];
	if (c->ngroups >= MB_MAX_GROUPS || name[0] == '\0' ||
	    strlen(name) >= sizeof(c->groups[0].name))
		return NULL;
	mb_group_conf *g = &c->groups[c->ngroups++];
	snprintf(g->name, sizeof(g->name), "%s", name);
	return g;
}

static int group_key(parse_ctx *x, mb_group_conf *g, const char *k, const char *v)
{
	if (strcmp(k, "uids") == 0)
		return mb_id_list_parse(v, &g->uids) == 0 ? 1
							  : fail(x, "%s: bad id list '%s'", k, v);
	if (strcmp(k, "gids") == 0)
		return mb_id_list_parse(v, &g->gids) == 0 ? 1
							  : fail(x, "%s: bad id list '%s'", k, v);
	if (strcmp(k, "name_uids") == 0)
		return mb_id_list_parse(v, &g->name_uids) == 0
			   ? 1
			   : fail(x, "%s: bad id list '%s'", k, v);
	if (strcmp(k, "max") == 0)
		return size_value(x, k, v, &g->max);
	if (strcmp(k, "reserve") == 0)
		return size_value(x, k, v, &g->reserve);
	if (strcmp(k, "names") == 0) {
		char buf[1024];
		snprintf(buf, sizeof(buf), "%s", v);
		g->npatterns = 0;
		for (char *save, *tok = strtok_r(buf, ",", &save); tok;
		     tok = strtok_r(NULL, ",", &save)) {
			while (*tok == ' ')
				tok++;
			if (*tok == '\0' || g->npatterns >= MB_MAX_PATTERNS ||
			    strlen(tok) >= sizeof(g->patterns[0]))
				return fail(x, "%s: bad name pattern list '%s'", k, v);
			snprintf(g->patterns[g->npatterns++], sizeof(g->patterns[0]), "%s", tok);
		}
		return 1;
	}
	return fail(x, "unknown key '%s' in a group section%s", k, "");
}

static int handler(void *user, const char *section, const char *k, const char *v)
{
	parse_ctx *x = user;
	mb_config *c = x->c;
	uint64_t n;

	if (strcmp(section, "broker") == 0) {
		if (strcmp(k, "listen") == 0) {
			if (strlen(v) >= sizeof(c->listen))
				return fail(x, "%s: address too long%s", k, "");
			snprintf(c->listen, sizeof(c->listen), "%s", v);
			return 1;
		}
		if (strcmp(k, "socket_mode") == 0) {
			char *end;
			unsigned long m = strtoul(v, &end, 8);
			if (*v == '\0' || *end != '\0' || m == 0 || m > 0777)
				return fail(x, "socket_mode: '%s' is not an octal mode like 0660%s",
					    v, "");
			c->socket_mode = (uint32_t)m;
			return 1;
		}
		if (strcmp(k, "socket_group") == 0) {
			if (*v == '\0' || strlen(v) >= sizeof(c->socket_group))
				return fail(x, "socket_group: '%s' is not a group%s", v, "");
			snprintf(c->socket_group, sizeof(c->socket_group), "%s", v);
			return 1;
		}
		if (strcmp(k, "budget") == 0) {
			if (mb_parse_size(v, UINT64_C(1) << 40, &n) != 0 ||
			    strlen(v) >= sizeof(c->budget))
				return fail(x, "budget: '%s' is not a size or percentage%s", v, "");
			snprintf(c->budget, sizeof(c->budget), "%s", v);
			return 1;
		}
		if (strcmp(k, "ceilings") == 0) {
			if (mb_parse_triple(v, true, c->ceiling_permille) != 0)
				return fail(
				    x, "ceilings: '%s' is not three non-decreasing percentages%s",
				    v, "");
			c->ceilings_set = true;
			return 1;
		}
		if (strcmp(k, "waits") == 0) {
			if (mb_parse_triple(v, false, c->wait_ms) != 0)
				return fail(x, "waits: '%s' is not three times in ms%s", v, "");
			c->waits_set = true;
			return 1;
		}
		if (strcmp(k, "audit_interval_ms") == 0) {
			if (mb_parse_size(v, 0, &n) != 0 || n < 10 || n > 3600000)
				return fail(x, "audit_interval_ms: '%s' is not 10..3600000%s", v,
					    "");
			c->audit_ms = (uint32_t)n;
			return 1;
		}
		if (strcmp(k, "commit_credit") == 0) {
			if (mb_parse_size(v, 0, &n) != 0 || n > MB_MAX_COMMIT_CREDIT)
				return fail(x, "commit_credit: '%s' is not a size up to 1G%s", v,
					    "");
			c->commit_credit = n; /* whole pages are taken when it is applied */
			return 1;
		}
		if (strcmp(k, "log_level") == 0) {
			c->log_level = mb_log_parse_level(v);
			return c->log_level >= 0
				   ? 1
				   : fail(x, "log_level: unknown level '%s'%s", v, "");
		}
		return fail(x, "unknown key '%s' in [broker]%s", k, "");
	}
	if (strcmp(section, "limits") == 0) {
		if (strcmp(k, "client_max") == 0)
			return size_value(x, k, v, &c->client_max);
		if (strcmp(k, "client_max_mapped") == 0)
			return size_value(x, k, v, &c->client_max_mapped);
		if (strcmp(k, "client_max_reserved") == 0)
			return size_value(x, k, v, &c->client_max_reserved);
		if (strcmp(k, "client_max_reservations") == 0 ||
		    strcmp(k, "sessions_per_uid") == 0) {
			if (mb_parse_size(v, 0, &n) != 0 || n == 0 || n > 100000000)
				return fail(x, "%s: '%s' is not a count", k, v);
			if (k[0] == 'c')
				c->client_max_reservations = (uint32_t)n;
			else
				c->sessions_per_uid = (uint32_t)n;
			return 1;
		}
		if (strcmp(k, "offender_refusal_ms") == 0) {
			if (mb_parse_size(v, 0, &n) != 0 || n < 1000 || n > MB_THROTTLE_MAX_MS)
				return fail(x, "offender_refusal_ms: '%s' is not 1000..300000%s", v,
					    "");
			c->offender_refusal_ms = (uint32_t)n;
			return 1;
		}
		return fail(x, "unknown key '%s' in [limits]%s", k, "");
	}
	if (strcmp(section, "access") == 0) {
		mb_id_list *l = strcmp(k, "uids") == 0	 ? &c->access_uids
				: strcmp(k, "gids") == 0 ? &c->access_gids
							 : NULL;
		if (l == NULL)
			return fail(x, "unknown key '%s' in [access]%s", k, "");
		return mb_id_list_parse(v, l) == 0 ? 1 : fail(x, "%s: bad id list '%s'", k, v);
	}
	if (strncmp(section, "group.", 6) == 0) {
		mb_group_conf *g = group_for(x, section);
		if (g == NULL)
			return fail(x, "[%s]: bad group name or too many groups%s", section, "");
		return group_key(x, g, k, v);
	}
	return fail(x, "unknown section [%s]%s", section, "");
}

int mb_config_load(const char *path, mb_config *c, char *err, size_t errlen)
{
	parse_ctx x = {.c = c};
	FILE *f;
	int line;

	mb_config_defaults(c);
	f = fopen(path, "r");
	if (f == NULL) {
		if (errno == ENOENT)
			return -ENOENT;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -EINVAL;
	}
	line = ini_parse_file(f, handler, &x);
	fclose(f);
	if (line != 0) {
		snprintf(err, errlen, "%s:%d: %s", path, line,
			 x.reason[0] ? x.reason : "syntax error (want [section] or key = value)");
		mb_config_defaults(c);
		return -EINVAL;
	}
	for (int i = 0; i < c->ngroups; i++) {
		const mb_group_conf *g = &c->groups[i];
		if (g->max != 0 && g->reserve > g->max) {
			snprintf(err, errlen, "%s: [group.%s]: reserve is larger than max", path,
				 g->name);
			mb_config_defaults(c);
			return -EINVAL;
		}
	}
	return 0;
}

int mb_config_match_group(const mb_config *c, uid_t uid, gid_t gid, const char *name)
{
	if (name != NULL && name[0] != '\0')
		for (int i = 0; i < c->ngroups; i++) {
			const mb_group_conf *g = &c->groups[i];
			if (!mb_id_list_has(&g->name_uids, (uint32_t)uid))
				continue;
			for (int p = 0; p < g->npatterns; p++)
				if (fnmatch(g->patterns[p], name, 0) == 0)
					return i;
		}
	for (int i = 0; i < c->ngroups; i++)
		if (mb_id_list_has(&c->groups[i].uids, (uint32_t)uid))
			return i;
	for (int i = 0; i < c->ngroups; i++)
		if (mb_id_list_has(&c->groups[i].gids, (uint32_t)gid))
			return i;
	return -1;
}
