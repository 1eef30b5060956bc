/*
 * admin.c: the admin channel (see admin.h): an nng REP socket with a few contexts, each cycling
 * RECV -> handle -> SEND on nng's worker threads, as in server.c but with nothing ever parked.
 *
 * Handlers copy what they need from the broker under b->lock into a snapshot and format it after
 * the lock is released, so a large `clients` or `metrics` answer does not hold up the request path.
 */
#include "admin.h"
#include "clock.h"
#include "credit.h"
#include "creds.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "admin.pb-c.h"
#include "log.h"
#include "mb_address.h"
#include "membroker.h"

#define ADMIN_CONTEXTS	      4
#define ADMIN_SEND_TIMEOUT_MS 5000
#define ADMIN_MAX_REQUEST     4096
#define ADMIN_MAX_GIDS	      32

typedef struct admin_work {
	enum { AW_RECV, AW_SEND } state;
	nng_aio *aio;
	nng_ctx ctx;
	struct mb_admin *admin;
} admin_work;

struct mb_admin {
	nng_socket sock;
	mb_broker *broker;
	uid_t self_uid;
	int ngids;
	gid_t gids[ADMIN_MAX_GIDS];
	admin_work works[ADMIN_CONTEXTS];
	int nworks;
};

/* When the admin channel started: the broker's uptime, near enough (main starts it at once). */
static uint64_t epoch_ms;

static const char *const level_names[MB_LEVELS] = {"task", "appdomain", "process"};

/* ---- snapshot of the broker, taken under its lock ---- */

typedef struct snap_client {
	uint64_t id;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	char name[MB_WIRE_MAX_NAME + 1];
	char group[64];
	uint64_t reserved, committed, reservations, age, credit;
	uint64_t at_level[MB_LEVELS];
	int max_level;
	uint32_t offences;
	const char *state; /* a static string */
} snap_client;

typedef struct snap_group {
	char name[64];
	uint64_t max, reserve, committed;
	uint32_t sessions;
} snap_group;

typedef struct snap {
	mb_ledger ledger;
	uint32_t sessions, nwaiters, waiters[MB_LEVELS], watchers;
	int pressure;
	uint64_t violations;
	uint64_t reclaimed, offences, refusals, waits_granted, waits_timed_out, waits_abandoned;
	uint64_t requests, protocol_errors, client_max;
	uint64_t credit, credit_revoked, commit_credit;
	uint64_t by_level[MB_LEVELS];
	uint32_t sessions_by_level[MB_LEVELS];
	uint64_t at_level[MB_LEVELS];
	int ngroups;
	snap_group groups[MB_MAX_GROUPS];
	size_t nclients;
	snap_client *clients; /* NULL unless asked for */
} snap;

static uint32_t count_list(struct mb_parked_list *l)
{
	uint32_t n = 0;
	mb_parked *p;

	TAILQ_FOREACH(p, l, link)
		n++;
	return n;
}

/* Fills *sn from the broker; with_clients: also every session. Returns 0 or -ENOMEM. */
static int take_snapshot(mb_broker *b, snap *sn, bool with_clients)
{
	struct timespec now;
	mb_section *s;

	memset(sn, 0, sizeof(*sn));
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&b->lock);
	/* Committed means in use (credit.h): unused commit credit is reported on its own. */
	sn->ledger = mb_ledger_in_use(&b->books, &b->reg);
	sn->credit = mb_credit_unused_total(&b->books, &b->reg);
	sn->credit_revoked = b->books.credit_taken_back_bytes;
	sn->commit_credit = b->conf.commit_credit;
	sn->sessions =
	    b->reg.sections; /* connections that said Hello: not the broker's own probes */
	sn->nwaiters = b->nwaiters;
	for (int i = 0; i < MB_LEVELS; i++)
		sn->waiters[i] = count_list(&b->waiters[i]);
	sn->watchers = count_list(&b->watchers);
	sn->pressure = b->pressure;
	sn->reclaimed = b->reclaimed_bytes;
	sn->offences = b->offences;
	sn->violations = b->books.violations;
	sn->refusals = b->refusals;
	sn->waits_granted = b->waits_granted;
	sn->waits_timed_out = b->waits_timed_out;
	sn->waits_abandoned = b->waits_abandoned;
	sn->requests = b->requests;
	sn->protocol_errors = b->protocol_errors;
	sn->client_max = b->conf.client_max;
	sn->ngroups = b->conf.ngroups;
	for (int g = 0; g < sn->ngroups && g < MB_MAX_GROUPS; g++) {
		snprintf(sn->groups[g].name, sizeof(sn->groups[g].name), "%s",
			 b->conf.groups[g].name);
		sn->groups[g].max = b->conf.groups[g].max;
		sn->groups[g].reserve = b->conf.groups[g].reserve;
		sn->groups[g].committed = b->books.group_charged[g];
		sn->groups[g].sessions = b->books.group_sessions[g];
	}
	if (with_clients && b->reg.sections > 0) {
		sn->clients = calloc(b->reg.sections, sizeof(*sn->clients));
		if (sn->clients == NULL) {
			pthread_mutex_unlock(&b->lock);
			return -ENOMEM;
		}
	}
	for (s = mb_registry_first(&b->reg); s != NULL; s = mb_registry_next(s)) {
		int lvl = s->max_level >= 0 && s->max_level < MB_LEVELS ? s->max_level : 0;
		uint64_t unused = mb_credit_unused(s);
		uint64_t committed = mb_section_charged(s) - unused;

		sn->by_level[lvl] += committed;
		sn->sessions_by_level[lvl]++;
		for (int l = 0; l < MB_LEVELS; l++)
			sn->at_level[l] += (uint64_t)s->map.committed_at[l] * MB_PAGE_SIZE;
		if (sn->clients == NULL || sn->nclients >= b->reg.sections)
			continue;
		snap_client *c = &sn->clients[sn->nclients++];
		c->id = s->id;
		c->pid = s->pid;
		c->uid = s->uid;
		c->gid = s->gid;
		memcpy(c->name, s->name, sizeof(c->name));
		c->name[sizeof(c->name) - 1] = '\0';
		if (s->group >= 0 && s->group < b->conf.ngroups)
			snprintf(c->group, sizeof(c->group), "%s", b->conf.groups[s->group].name);
		c->reserved = s->map.reserved_bytes;
		c->committed = committed;
		c->reservations = s->map.count;
		c->max_level = s->max_level;
		for (int l = 0; l < MB_LEVELS; l++)
			c->at_level[l] = (uint64_t)s->map.committed_at[l] * MB_PAGE_SIZE;
		c->age = now.tv_sec > s->connected ? (uint64_t)(now.tv_sec - s->connected) : 0;
		c->offences = s->offences;
		c->state = mb_section_state_name(s->state);
		c->credit = unused;
	}
	pthread_mutex_unlock(&b->lock);
	return 0;
}

static uint64_t uptime_seconds(void)
{
	uint64_t now = mb_now_ms();
	return now > epoch_ms ? (now - epoch_ms) / 1000 : 0;
}

/* ---- a growing text buffer for the metrics ---- */

typedef struct text {
	char *buf;
	size_t len, cap;
	bool failed;
} text;

__attribute__((format(printf, 2, 3))) static void text_add(text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->failed)
		return;
	for (;;) {
		size_t room = t->cap - t->len;
		va_start(ap, fmt);
		n = vsnprintf(t->buf ? t->buf + t->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->failed = true;
			return;
		}
		if ((size_t)n < room) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap ? t->cap * 2 : 4096;
		while (cap < t->len + (size_t)n + 1)
			cap *= 2;
		char *nb = realloc(t->buf, cap);
		if (nb == NULL) {
			t->failed = true;
			return;
		}
		t->buf = nb;
		t->cap = cap;
	}
}

/* A label value with \, " and newline escaped, as the exposition format wants. */
static void text_label(text *t, const char *v)
{
	char esc[2 * (MB_WIRE_MAX_NAME + 64) + 1];
	size_t j = 0;

	for (size_t i = 0; v[i] != '\0' && j + 2 < sizeof(esc); i++) {
		char ch = v[i];
		if (ch == '\\' || ch == '"') {
			esc[j++] = '\\';
			esc[j++] = ch;
		} else if (ch == '\n') {
			esc[j++] = '\\';
			esc[j++] = 'n';
		} else {
			esc[j++] = ch;
		}
	}
	esc[j] = '\0';
	text_add(t, "%s", esc);
}

static void metric_head(text *t, const char *name, const char *type, const char *help)
{
	text_add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric(text *t, const char *name, const char *type, const char *help, uint64_t v)
{
	metric_head(t, name, type, help);
	text_add(t, "%s %" PRIu64 "\n", name, v);
}

/* One sample per client (sessions that said Hello) of a per-client value. */
static void client_metric(text *t, const snap *sn, const char *name, const char *type,
			  const char *help, uint64_t (*get)(const snap_client *c))
{
	metric_head(t, name, type, help);
	for (size_t i = 0; i < sn->nclients; i++) {
		const snap_client *c = &sn->clients[i];
		if (c->id == 0)
			continue;
		text_add(t, "%s{session=\"%" PRIu64 "\",pid=\"%d\",uid=\"%u\",name=\"", name, c->id,
			 (int)c->pid, (unsigned)c->uid);
		text_label(t, c->name);
		text_add(t, "\",group=\"");
		text_label(t, c->group);
		text_add(t, "\"} %" PRIu64 "\n", get(c));
	}
}

static uint64_t get_committed(const snap_client *c)
{
	return c->committed;
}

static uint64_t get_reserved(const snap_client *c)
{
	return c->reserved;
}

static uint64_t get_reservations(const snap_client *c)
{
	return c->reservations;
}

static uint64_t get_offences(const snap_client *c)
{
	return c->offences;
}

static uint64_t get_max_level(const snap_client *c)
{
	return (uint64_t)(c->max_level < 0 ? 0 : c->max_level);
}

static char *format_metrics(const snap *sn)
{
	text t = {0};

	metric_head(&t, "membroker_info", "gauge", "Version of the running membrokerd.");
	text_add(&t, "membroker_info{version=\"%d.%d.%d\"} 1\n", MB_VERSION_MAJOR, MB_VERSION_MINOR,
		 MB_VERSION_PATCH);
	metric(&t, "membroker_budget_bytes", "gauge", "Memory budget of the broker.",
	       sn->ledger.budget);
	metric(&t, "membroker_committed_bytes", "gauge", "Bytes committed by all clients.",
	       sn->ledger.committed);
	metric(&t, "membroker_memory_load_percent", "gauge", "Share of the budget committed.",
	       mb_ledger_load(&sn->ledger));
	metric(&t, "membroker_pressure", "gauge",
	       "Memory pressure as EMemoryAvailable: 1 low, 2 neutral, 3 high.",
	       (uint64_t)sn->pressure);
	metric_head(&t, "membroker_level_ceiling_bytes", "gauge",
		    "What commits at each critical level may bring the total to.");
	for (int i = 0; i < MB_LEVELS; i++)
		text_add(&t, "membroker_level_ceiling_bytes{level=\"%s\"} %" PRIu64 "\n",
			 level_names[i], mb_ledger_ceiling(&sn->ledger, i));
	metric_head(&t, "membroker_level_wait_seconds", "gauge",
		    "How long a commit at each critical level may wait for memory.");
	for (int i = 0; i < MB_LEVELS; i++)
		text_add(&t, "membroker_level_wait_seconds{level=\"%s\"} %u.%03u\n", level_names[i],
			 sn->ledger.wait_ms[i] / 1000, sn->ledger.wait_ms[i] % 1000);
	metric(&t, "membroker_clients", "gauge", "Connected clients.", sn->sessions);
	metric(&t, "membroker_waiters", "gauge", "Commits waiting for memory.", sn->nwaiters);
	metric_head(&t, "membroker_level_waiters", "gauge",
		    "Commits waiting for memory, by critical level.");
	for (int i = 0; i < MB_LEVELS; i++)
		text_add(&t, "membroker_level_waiters{level=\"%s\"} %u\n", level_names[i],
			 sn->waiters[i]);
	metric_head(&t, "membroker_committed_by_max_level_bytes", "gauge",
		    "Bytes committed by the clients whose highest commit level is this one.");
	for (int i = 0; i < MB_LEVELS; i++)
		text_add(&t, "membroker_committed_by_max_level_bytes{level=\"%s\"} %" PRIu64 "\n",
			 level_names[i], sn->by_level[i]);
	metric_head(&t, "membroker_level_committed_bytes", "gauge",
		    "Bytes of pages committed at this critical level, all clients.");
	for (int i = 0; i < MB_LEVELS; i++)
		text_add(&t, "membroker_level_committed_bytes{level=\"%s\"} %" PRIu64 "\n",
			 level_names[i], sn->at_level[i]);
	metric(&t, "membroker_watchers", "gauge", "Clients listening for memory notifications.",
	       sn->watchers);
	metric(&t, "membroker_refusals_total", "counter", "Commits refused with E_OUTOFMEMORY.",
	       sn->refusals);
	metric_head(&t, "membroker_waits_total", "counter",
		    "Commits that waited for memory, by outcome.");
	text_add(&t, "membroker_waits_total{outcome=\"granted\"} %" PRIu64 "\n", sn->waits_granted);
	text_add(&t, "membroker_waits_total{outcome=\"timed_out\"} %" PRIu64 "\n",
		 sn->waits_timed_out);
	text_add(&t, "membroker_waits_total{outcome=\"abandoned\"} %" PRIu64 "\n",
		 sn->waits_abandoned);
	metric(&t, "membroker_reclaimed_bytes_total", "counter",
	       "Bytes of MEM_RESET pages the broker discarded to make room.", sn->reclaimed);
	metric(&t, "membroker_invariant_violations_total", "counter",
	       "Times the books broke total == sum of sessions <= budget (journal: the path).",
	       sn->violations);
	metric(&t, "membroker_offences_total", "counter",
	       "Writes by clients to memory they had not committed.", sn->offences);
	metric(&t, "membroker_requests_total", "counter", "Client requests handled.", sn->requests);
	metric(&t, "membroker_credit_bytes", "gauge",
	       "Commit credit granted to clients and not used yet (not counted as committed).",
	       sn->credit);
	metric(&t, "membroker_credit_revoked_bytes_total", "counter",
	       "Unused commit credit taken back under memory pressure.", sn->credit_revoked);
	metric(&t, "membroker_protocol_errors_total", "counter",
	       "Undecodable client requests (their connections were closed).", sn->protocol_errors);
	metric(&t, "membroker_uptime_seconds", "gauge", "Seconds since the broker started.",
	       uptime_seconds());
	if (sn->ngroups > 0) {
		metric_head(&t, "membroker_group_committed_bytes", "gauge",
			    "Bytes committed by the clients of each group.");
		for (int g = 0; g < sn->ngroups; g++) {
			text_add(&t, "membroker_group_committed_bytes{group=\"");
			text_label(&t, sn->groups[g].name);
			text_add(&t, "\"} %" PRIu64 "\n", sn->groups[g].committed);
		}
		metric_head(&t, "membroker_group_max_bytes", "gauge",
			    "Limit of each group (0: none).");
		for (int g = 0; g < sn->ngroups; g++) {
			text_add(&t, "membroker_group_max_bytes{group=\"");
			text_label(&t, sn->groups[g].name);
			text_add(&t, "\"} %" PRIu64 "\n", sn->groups[g].max);
		}
		metric_head(&t, "membroker_group_clients", "gauge",
			    "Connected clients of each group.");
		for (int g = 0; g < sn->ngroups; g++) {
			text_add(&t, "membroker_group_clients{group=\"");
			text_label(&t, sn->groups[g].name);
			text_add(&t, "\"} %u\n", sn->groups[g].sessions);
		}
	}
	client_metric(&t, sn, "membroker_client_committed_bytes", "gauge",
		      "Bytes committed by each client.", get_committed);
	client_metric(&t, sn, "membroker_client_reserved_bytes", "gauge",
		      "Address space reserved by each client.", get_reserved);
	client_metric(&t, sn, "membroker_client_reservations", "gauge",
		      "Reservations held by each client.", get_reservations);
	client_metric(&t, sn, "membroker_client_max_level", "gauge",
		      "Highest critical level each client committed at.", get_max_level);
	client_metric(&t, sn, "membroker_client_offences_total", "counter",
		      "Writes by each client to memory it had not committed.", get_offences);
	if (t.failed) {
		free(t.buf);
		return NULL;
	}
	if (t.buf == NULL)
		return strdup("");
	return t.buf;
}

/* ---- request handling ---- */

typedef Membroker__Admin__V1__AdminRequest AdminRequest;
typedef Membroker__Admin__V1__AdminResponse AdminResponse;

static int pack_response(const AdminResponse *r, void **reply, size_t *reply_len)
{
	size_t n = membroker__admin__v1__admin_response__get_packed_size(r);
	uint8_t *buf = malloc(n ? n : 1);

	if (buf == NULL)
		return -1;
	membroker__admin__v1__admin_response__pack(r, buf);
	*reply = buf;
	*reply_len = n;
	return 0;
}

static int reply_error(HRESULT hr, const char *detail, void **reply, size_t *reply_len)
{
	AdminResponse r = MEMBROKER__ADMIN__V1__ADMIN_RESPONSE__INIT;

	r.hresult = (uint32_t)hr;
	r.detail = (char *)detail;
	return pack_response(&r, reply, reply_len);
}

static int handle_status(mb_broker *b, void **reply, size_t *reply_len)
{
	AdminResponse r = MEMBROKER__ADMIN__V1__ADMIN_RESPONSE__INIT;
	Membroker__Admin__V1__StatusReply st = MEMBROKER__ADMIN__V1__STATUS_REPLY__INIT;
	Membroker__Admin__V1__LevelInfo levels[MB_LEVELS], *plevels[MB_LEVELS];
	Membroker__Admin__V1__GroupInfo *groups = NULL, **pgroups = NULL;
	char version[32];
	snap sn;
	int rv;

	if (take_snapshot(b, &sn, false) != 0)
		return reply_error(E_OUTOFMEMORY, "out of memory", reply, reply_len);
	snprintf(version, sizeof(version), "%d.%d.%d", MB_VERSION_MAJOR, MB_VERSION_MINOR,
		 MB_VERSION_PATCH);
	st.version = version;
	st.budget = sn.ledger.budget;
	st.committed = sn.ledger.committed;
	st.memory_load = mb_ledger_load(&sn.ledger);
	st.pressure = (uint32_t)sn.pressure;
	st.sessions = sn.sessions;
	st.waiters = sn.nwaiters;
	st.watchers = sn.watchers;
	for (int i = 0; i < MB_LEVELS; i++) {
		Membroker__Admin__V1__LevelInfo li = MEMBROKER__ADMIN__V1__LEVEL_INFO__INIT;
		li.level = (uint32_t)i;
		li.ceiling_permille = sn.ledger.ceiling_permille[i];
		li.ceiling = mb_ledger_ceiling(&sn.ledger, i);
		li.wait_ms = sn.ledger.wait_ms[i];
		li.waiters = sn.waiters[i];
		li.committed_by_max_level = sn.by_level[i];
		li.sessions_by_max_level = sn.sessions_by_level[i];
		li.committed = sn.at_level[i];
		levels[i] = li;
		plevels[i] = &levels[i];
	}
	st.n_levels = MB_LEVELS;
	st.levels = plevels;
	st.reclaimed = sn.reclaimed;
	st.offences = sn.offences;
	st.credit = sn.credit;
	st.credit_revoked = sn.credit_revoked;
	st.commit_credit = sn.commit_credit;
	st.refusals = sn.refusals;
	st.waits_granted = sn.waits_granted;
	st.waits_timed_out = sn.waits_timed_out;
	st.waits_abandoned = sn.waits_abandoned;
	st.requests = sn.requests;
	st.protocol_errors = sn.protocol_errors;
	st.uptime_seconds = uptime_seconds();
	st.client_max = sn.client_max;
	st.pid = (uint32_t)getpid();
	if (sn.ngroups > 0) {
		groups = calloc((size_t)sn.ngroups, sizeof(*groups));
		pgroups = calloc((size_t)sn.ngroups, sizeof(*pgroups));
		if (groups == NULL || pgroups == NULL) {
			free(groups);
			free(pgroups);
			return reply_error(E_OUTOFMEMORY, "out of memory", reply, reply_len);
		}
		for (int g = 0; g < sn.ngroups; g++) {
			Membroker__Admin__V1__GroupInfo gi = MEMBROKER__ADMIN__V1__GROUP_INFO__INIT;
			gi.name = sn.groups[g].name;
			gi.max = sn.groups[g].max;
			gi.reserve = sn.groups[g].reserve;
			gi.committed = sn.groups[g].committed;
			gi.sessions = sn.groups[g].sessions;
			groups[g] = gi;
			pgroups[g] = &groups[g];
		}
		st.n_groups = (size_t)sn.ngroups;
		st.groups = pgroups;
	}
	r.hresult = (uint32_t)S_OK;
	r.reply_case = MEMBROKER__ADMIN__V1__ADMIN_RESPONSE__REPLY_STATUS;
	r.status = &st;
	rv = pack_response(&r, reply, reply_len);
	free(groups);
	free(pgroups);
	return rv;
}

static int handle_clients(mb_broker *b, void **reply, size_t *reply_len)
{
	AdminResponse r = MEMBROKER__ADMIN__V1__ADMIN_RESPONSE__INIT;
	Membroker__Admin__V1__ClientsReply cr = MEMBROKER__ADMIN__V1__CLIENTS_REPLY__INIT;
	Membroker__Admin__V1__ClientInfo *infos = NULL, **pinfos = NULL;
	snap sn;
	int rv;

	if (take_snapshot(b, &sn, true) != 0)
		return reply_error(E_OUTOFMEMORY, "out of memory", reply, reply_len);
	if (sn.nclients > 0) {
		infos = calloc(sn.nclients, sizeof(*infos));
		pinfos = calloc(sn.nclients, sizeof(*pinfos));
		if (infos == NULL || pinfos == NULL) {
			free(infos);
			free(pinfos);
			free(sn.clients);
			return reply_error(E_OUTOFMEMORY, "out of memory", reply, reply_len);
		}
	}
	for (size_t i = 0; i < sn.nclients; i++) {
		Membroker__Admin__V1__ClientInfo ci = MEMBROKER__ADMIN__V1__CLIENT_INFO__INIT;
		snap_client *c = &sn.clients[i];
		ci.session_id = c->id;
		ci.pid = (uint32_t)c->pid;
		ci.uid = (uint32_t)c->uid;
		ci.gid = (uint32_t)c->gid;
		ci.name = c->name;
		ci.group = c->group;
		ci.reserved = c->reserved;
		ci.committed = c->committed;
		ci.reservations = c->reservations;
		ci.max_level = (uint32_t)(c->max_level < 0 ? 0 : c->max_level);
		ci.n_committed_at_level = MB_LEVELS;
		ci.committed_at_level = c->at_level;
		ci.age_seconds = c->age;
		ci.credit = c->credit;
		ci.offences = c->offences;
		ci.state = (char *)c->state;
		infos[i] = ci;
		pinfos[i] = &infos[i];
	}
	cr.n_clients = sn.nclients;
	cr.clients = pinfos;
	r.hresult = (uint32_t)S_OK;
	r.reply_case = MEMBROKER__ADMIN__V1__ADMIN_RESPONSE__REPLY_CLIENTS;
	r.clients = &cr;
	rv = pack_response(&r, reply, reply_len);
	free(infos);
	free(pinfos);
	free(sn.clients);
	return rv;
}

static int handle_metrics(mb_broker *b, void **reply, size_t *reply_len)
{
	AdminResponse r = MEMBROKER__ADMIN__V1__ADMIN_RESPONSE__INIT;
	Membroker__Admin__V1__MetricsReply mr = MEMBROKER__ADMIN__V1__METRICS_REPLY__INIT;
	snap sn;
	int rv;

	if (take_snapshot(b, &sn, true) != 0)
		return reply_error(E_OUTOFMEMORY, "out of memory", reply, reply_len);
	mr.text = format_metrics(&sn);
	free(sn.clients);
	if (mr.text == NULL)
		return reply_error(E_OUTOFMEMORY, "out of memory", reply, reply_len);
	r.hresult = (uint32_t)S_OK;
	r.reply_case = MEMBROKER__ADMIN__V1__ADMIN_RESPONSE__REPLY_METRICS;
	r.metrics = &mr;
	rv = pack_response(&r, reply, reply_len);
	free(mr.text);
	return rv;
}

static int handle_set_budget(mb_broker *b, uint64_t bytes, void **reply, size_t *reply_len)
{
	char detail[200];
	uint64_t old, committed;

	if (bytes < MB_ADMIN_MIN_BUDGET)
		return reply_error(E_INVALIDARG, "the budget must be at least 1 MiB", reply,
				   reply_len);
	if (mb_broker_set_budget(b, bytes, &old, &committed) != 0) {
		snprintf(detail, sizeof(detail),
			 "%" PRIu64 " bytes are committed now; the budget cannot go below that",
			 committed);
		return reply_error(E_INVALIDARG, detail, reply, reply_len);
	}
	mb_log(LOG_NOTICE, "budget changed by membrokerctl: %" PRIu64 " -> %" PRIu64 " bytes", old,
	       bytes);
	snprintf(detail, sizeof(detail), "budget %" PRIu64 " bytes (was %" PRIu64 ")", bytes, old);
	return reply_error(S_OK, detail, reply, reply_len);
}

static int handle_reload(void **reply, size_t *reply_len)
{
	/* Process-directed, so main's sigtimedwait() takes it (every thread blocks SIGHUP; a
	 * raise() would be pending on this nng thread only). */
	if (kill(getpid(), SIGHUP) != 0)
		return reply_error(E_FAIL, "cannot signal the broker to reload", reply, reply_len);
	mb_log(LOG_INFO, "reload requested by membrokerctl");
	return reply_error(S_OK, "reload requested; the outcome is in the broker's log", reply,
			   reply_len);
}

int mb_admin_handle(mb_broker *b, const void *req, size_t len, void **reply, size_t *reply_len)
{
	AdminRequest *rq;
	int rv;

	*reply = NULL;
	*reply_len = 0;
	if (len > ADMIN_MAX_REQUEST)
		return -1;
	rq = membroker__admin__v1__admin_request__unpack(NULL, len, req);
	if (rq == NULL)
		return -1;
	switch (rq->op_case) {
	case MEMBROKER__ADMIN__V1__ADMIN_REQUEST__OP_STATUS:
		rv = handle_status(b, reply, reply_len);
		break;
	case MEMBROKER__ADMIN__V1__ADMIN_REQUEST__OP_CLIENTS:
		rv = handle_clients(b, reply, reply_len);
		break;
	case MEMBROKER__ADMIN__V1__ADMIN_REQUEST__OP_SET_BUDGET:
		rv = handle_set_budget(b, rq->set_budget->bytes, reply, reply_len);
		break;
	case MEMBROKER__ADMIN__V1__ADMIN_REQUEST__OP_RELOAD:
		rv = handle_reload(reply, reply_len);
		break;
	case MEMBROKER__ADMIN__V1__ADMIN_REQUEST__OP_METRICS:
		rv = handle_metrics(b, reply, reply_len);
		break;
	default:
		rv = reply_error(E_INVALIDARG, "unknown admin request (a newer membrokerctl?)",
				 reply, reply_len);
		break;
	}
	membroker__admin__v1__admin_request__free_unpacked(rq, NULL);
	return rv;
}

/* ---- access control ---- */

/* Supplementary groups of the peer (SO_PEERGROUPS), checked against the admin list. */
static bool peer_groups_allowed(const mb_admin *a, pid_t pid, uid_t uid, gid_t gid)
{
	gid_t *groups;
	int n = mb_peer_groups(pid, uid, gid, &groups);
	bool found = false;

	for (int i = 0; i < n && !found; i++)
		for (int j = 0; j < a->ngids && !found; j++)
			found = a->gids[j] == groups[i];
	free(groups);
	return found;
}

int mb_admin_peer_allowed(const mb_admin *a, pid_t pid, uid_t uid, gid_t gid)
{
	if (uid == 0 || uid == a->self_uid)
		return 1;
	for (int i = 0; i < a->ngids; i++)
		if (a->gids[i] == gid)
			return 1;
	return a->ngids > 0 && pid > 0 && peer_groups_allowed(a, pid, uid, gid);
}

/* Whether the peer behind pipe may administer; logs a refusal. */
static bool pipe_allowed(const mb_admin *a, nng_pipe p)
{
	pid_t pid;
	uid_t uid;
	gid_t gid;

	if (mb_pipe_peer(p, &pid, &uid, &gid) != 0) {
		mb_log(LOG_WARNING, "admin: a request without peer credentials; refused");
		return false;
	}
	if (mb_admin_peer_allowed(a, pid, uid, gid))
		return true;
	mb_log(
	    LOG_NOTICE,
	    "admin: refused pid %d uid %u gid %u (not root, the broker's user or an admin group)",
	    (int)pid, (unsigned)uid, (unsigned)gid);
	return false;
}

/* ---- the REP state machines ---- */

static void work_recv(admin_work *w)
{
	w->state = AW_RECV;
	nng_aio_set_timeout(w->aio, NNG_DURATION_INFINITE);
	nng_ctx_recv(w->ctx, w->aio);
}

static void work_cb(void *arg)
{
	admin_work *w = arg;
	mb_admin *a = w->admin;
	int rv = nng_aio_result(w->aio);
	nng_msg *msg;
	nng_pipe pipe;
	void *out = NULL;
	size_t out_len = 0;

	switch (w->state) {
	case AW_RECV:
		if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
			return;
		if (rv != 0) {
			work_recv(w);
			return;
		}
		msg = nng_aio_get_msg(w->aio);
		nng_aio_set_msg(w->aio, NULL);
		pipe = nng_msg_get_pipe(msg);
		/*
		 * Refusals and malformed requests are answered, not cut off: with nng 1.5.2 a pipe
		 * the server closes can leave the listener wedged (no later connection is served).
		 * The credentials are checked per request, so no handler ever runs for others.
		 */
		if (!pipe_allowed(a, pipe))
			rv = reply_error(E_ACCESSDENIED,
					 "access denied: root, the broker's user or an admin group "
					 "only",
					 &out, &out_len);
		else if (mb_admin_handle(a->broker, nng_msg_body(msg), nng_msg_len(msg), &out,
					 &out_len) != 0)
			rv = reply_error(E_INVALIDARG, "malformed admin request", &out, &out_len);
		else
			rv = 0;
		if (rv != 0) {
			free(out);
			nng_msg_free(msg);
			work_recv(w);
			return;
		}
		nng_msg_clear(msg);
		if (nng_msg_append(msg, out, out_len) != 0) {
			free(out);
			nng_msg_free(msg);
			work_recv(w);
			return;
		}
		free(out);
		w->state = AW_SEND;
		nng_aio_set_msg(w->aio, msg);
		nng_aio_set_timeout(w->aio, ADMIN_SEND_TIMEOUT_MS);
		nng_ctx_send(w->ctx, w->aio);
		return;
	case AW_SEND:
		if (rv != 0) {
			msg = nng_aio_get_msg(w->aio);
			nng_aio_set_msg(w->aio, NULL);
			if (msg != NULL)
				nng_msg_free(msg);
			if (rv == NNG_ECLOSED)
				return;
		}
		work_recv(w);
		return;
	}
}

int mb_admin_address(const char *rpc_url, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s" MB_ADMIN_SUFFIX, rpc_url ? rpc_url : "");

	if (rpc_url == NULL || n < 0 || (size_t)n >= len)
		return -EINVAL;
	return 0;
}

int mb_admin_default_gids(gid_t *gids, int max)
{
	struct group *g;

	if (gids == NULL || max < 1)
		return 0;
	g = getgrnam(MB_ADMIN_GROUP);
	if (g == NULL)
		return 0;
	gids[0] = g->gr_gid;
	return 1;
}

int mb_admin_start(mb_broker *b, const char *rpc_url, const gid_t *admin_gids, int n,
		   mb_admin **out)
{
	char url[600];
	mb_admin *a;
	nng_listener l;
	int rv;

	if (mb_admin_address(rpc_url, url, sizeof(url)) != 0 || n < 0 || n > ADMIN_MAX_GIDS ||
	    (n > 0 && admin_gids == NULL))
		return NNG_EINVAL;
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return NNG_ENOMEM;
	a->broker = b;
	a->self_uid = geteuid();
	a->ngids = n;
	if (n > 0)
		memcpy(a->gids, admin_gids, (size_t)n * sizeof(*admin_gids));
	if (epoch_ms == 0)
		epoch_ms = mb_now_ms();
	if ((rv = nng_rep0_open(&a->sock)) != 0) {
		free(a);
		return rv;
	}
	if ((rv = nng_socket_set_size(a->sock, NNG_OPT_RECVMAXSZ, ADMIN_MAX_REQUEST)) != 0 ||
	    (rv = nng_listener_create(&l, a->sock, url)) != 0)
		goto fail;
	if (mb_address_ipc_path(url) != NULL &&
	    (rv = nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS, 0660)) != 0)
		goto fail;
	for (int i = 0; i < ADMIN_CONTEXTS; i++) {
		admin_work *w = &a->works[i];
		w->admin = a;
		if ((rv = nng_aio_alloc(&w->aio, work_cb, w)) != 0)
			goto fail;
		a->nworks++;
		if ((rv = nng_ctx_open(&w->ctx, a->sock)) != 0)
			goto fail;
	}
	if ((rv = nng_listener_start(l, 0)) != 0)
		goto fail;
	/* Members of the admin group need not be in the broker's group to reach the socket. */
	if (n > 0 && mb_address_ipc_path(url) != NULL &&
	    chown(mb_address_ipc_path(url), (uid_t)-1, admin_gids[0]) != 0)
		mb_log(LOG_NOTICE,
		       "admin: cannot give %s to gid %u (%s); admins must reach it through the "
		       "socket's group",
		       mb_address_ipc_path(url), (unsigned)admin_gids[0], strerror(errno));
	for (int i = 0; i < a->nworks; i++)
		work_recv(&a->works[i]);
	mb_log(LOG_INFO, "admin channel on %s", url);
	*out = a;
	return 0;
fail:
	mb_admin_stop(a);
	return rv;
}

void mb_admin_stop(mb_admin *a)
{
	if (a == NULL)
		return;
	/* As in server.c (nng #1543): stop the state machines, close the socket, then free. */
	for (int i = 0; i < a->nworks; i++)
		nng_aio_stop(a->works[i].aio);
	nng_close(a->sock);
	for (int i = 0; i < a->nworks; i++)
		nng_aio_free(a->works[i].aio);
	free(a);
}
