/*
 * membrokerctl: the admin CLI of membrokerd. Talks membroker.admin.v1 (proto/admin.proto) over nng
 * REQ to the broker's admin socket: the RPC socket's name with ".admin" appended.
 *
 * Exit codes: 0 ok, 1 the broker refused or failed the request, 2 usage, 3 the broker is not
 * running (or does not answer), 4 access denied.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "admin.pb-c.h"
#include "mb_address.h"
#include "mb_size.h"
#include "mb_wire.h"
#include "membroker.h"

#define EXIT_BROKER 1
#define EXIT_USAGE  2
#define EXIT_DOWN   3
#define EXIT_DENIED 4

/* Must match daemon/admin.h (MB_ADMIN_SUFFIX). */
#define ADMIN_SUFFIX ".admin"

#define DEFAULT_TIMEOUT_MS 10000
#define MAX_REPLY	   (64u << 20)

typedef Membroker__Admin__V1__AdminRequest AdminRequest;
typedef Membroker__Admin__V1__AdminResponse AdminResponse;

static const char *const level_names[3] = {"task", "appdomain", "process"};

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "Usage: membrokerctl [OPTIONS] COMMAND\n"
	    "Administers a running membrokerd.\n\n"
	    "Commands:\n"
	    "  status            budget, usage, levels, waits and counters\n"
	    "  clients           the connected clients and their usage\n"
	    "  set-budget SIZE   change the budget now (bytes with K/M/G/T suffix)\n"
	    "  reload            reload the configuration file (as SIGHUP does)\n"
	    "  metrics           metrics in the Prometheus text format\n\n"
	    "Options:\n"
	    "  -a, --address URL   the broker's address (ipc:///path or abstract://name); default\n"
	    "                      $MEMBROKER_ADDRESS, else the system broker's\n"
	    "                      " MB_DEFAULT_ADDRESS ". The admin\n"
	    "                      socket is that address with \"" ADMIN_SUFFIX "\" appended.\n"
	    "  -j, --json          print status, clients, set-budget and reload as JSON\n"
	    "  -t, --timeout MS    how long to wait for the broker's answer (default %d)\n"
	    "  -h, --help          show this help\n"
	    "  -V, --version       show the version\n\n"
	    "Exit status: 0 ok, 1 the broker refused the request, 2 usage error, 3 membrokerd\n"
	    "not running, 4 access denied (root, the broker's user or an admin group only).\n",
	    DEFAULT_TIMEOUT_MS);
}

/* "512.0 MiB" style, into buf. */
static const char *human(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double v = (double)bytes;
	int u = 0;

	if (bytes < 1024) {
		snprintf(buf, len, "%" PRIu64 " B", bytes);
		return buf;
	}
	while (v >= 1024 && u < 6) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

static const char *duration(uint64_t s, char *buf, size_t len)
{
	if (s >= 86400)
		snprintf(buf, len, "%" PRIu64 "d %02" PRIu64 "h%02" PRIu64 "m", s / 86400,
			 s % 86400 / 3600, s % 3600 / 60);
	else if (s >= 3600)
		snprintf(buf, len, "%" PRIu64 "h%02" PRIu64 "m%02" PRIu64 "s", s / 3600,
			 s % 3600 / 60, s % 60);
	else if (s >= 60)
		snprintf(buf, len, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
	else
		snprintf(buf, len, "%" PRIu64 "s", s);
	return buf;
}

static const char *pressure_name(uint32_t p)
{
	switch (p) {
	case 1:
		return "low";
	case 2:
		return "neutral";
	case 3:
		return "high";
	default:
		return "unknown";
	}
}

/* ---- the connection ---- */

/*
 * The broker answers a peer that may not administer with E_ACCESSDENIED. A broker that closes the
 * connection instead (as a stricter one may, right after it arrives) is detected too: REQ would
 * quietly redial and resend, so a closed pipe cancels the operation in flight, and a request that
 * saw its pipe go without an answer is reported as access denied.
 */
static struct {
	pthread_mutex_t lock;
	bool removed;
	nng_aio *aio; /* the operation in flight */
} conn = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void pipe_removed(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	(void)p;
	(void)ev;
	(void)arg;
	pthread_mutex_lock(&conn.lock);
	conn.removed = true;
	if (conn.aio != NULL)
		nng_aio_cancel(conn.aio);
	pthread_mutex_unlock(&conn.lock);
}

static int broker_down(const char *url)
{
	fprintf(stderr, "membrokerctl: membrokerd is not running at %s\n", url);
	return EXIT_DOWN;
}

/* The broker refused this user (or closed the connection before an answer; a broker going away
 * at that very moment looks the same). */
static int denied(void)
{
	fprintf(stderr,
		"membrokerctl: access denied: membrokerctl needs root or the admin group\n");
	return EXIT_DENIED;
}

/* Sends req and waits for the response. Returns 0 and *out (to free), or an exit code. */
static int call(const char *url, const AdminRequest *req, int timeout_ms, AdminResponse **out)
{
	nng_socket sock;
	nng_ctx ctx;
	nng_aio *aio = NULL;
	nng_msg *msg = NULL;
	size_t len = membroker__admin__v1__admin_request__get_packed_size(req);
	int rv, code = EXIT_BROKER;
	bool removed;

	if ((rv = nng_req0_open(&sock)) != 0) {
		fprintf(stderr, "membrokerctl: %s\n", nng_strerror(rv));
		return EXIT_BROKER;
	}
	if ((rv = nng_socket_set_size(sock, NNG_OPT_RECVMAXSZ, MAX_REPLY)) != 0 ||
	    (rv = nng_socket_set_ms(sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE)) != 0 ||
	    /* No redial after the broker closes us: exiting while a redial negotiates would
	     * wedge the broker's nng 1.5.2 listener (nng #1518). */
	    (rv = nng_socket_set_ms(sock, NNG_OPT_RECONNMINT, 3600000)) != 0 ||
	    (rv = nng_socket_set_ms(sock, NNG_OPT_RECONNMAXT, 3600000)) != 0 ||
	    (rv = nng_pipe_notify(sock, NNG_PIPE_EV_REM_POST, pipe_removed, NULL)) != 0 ||
	    (rv = nng_aio_alloc(&aio, NULL, NULL)) != 0 || (rv = nng_ctx_open(&ctx, sock)) != 0 ||
	    (rv = nng_msg_alloc(&msg, len)) != 0) {
		fprintf(stderr, "membrokerctl: %s\n", nng_strerror(rv));
		goto out;
	}
	membroker__admin__v1__admin_request__pack(req, nng_msg_body(msg));
	rv = mb_wire_dial(sock, url, timeout_ms);
	if (rv == NNG_ECONNREFUSED || rv == NNG_ENOENT || rv == NNG_EADDRINVAL) {
		code = broker_down(url);
		goto out;
	}
	if (rv == NNG_EPERM) {
		code = denied();
		goto out;
	}
	if (rv != 0) {
		fprintf(stderr, "membrokerctl: cannot connect to %s: %s\n", url, nng_strerror(rv));
		code = EXIT_DOWN;
		goto out;
	}

	for (int step = 0; step < 2; step++) {
		pthread_mutex_lock(&conn.lock);
		if (conn.removed) {
			pthread_mutex_unlock(&conn.lock);
			code = denied();
			goto out;
		}
		conn.aio = aio;
		nng_aio_set_timeout(aio, timeout_ms);
		if (step == 0) {
			nng_aio_set_msg(aio, msg);
			msg = NULL;
			nng_ctx_send(ctx, aio);
		} else {
			nng_ctx_recv(ctx, aio);
		}
		pthread_mutex_unlock(&conn.lock);
		nng_aio_wait(aio);
		pthread_mutex_lock(&conn.lock);
		conn.aio = NULL;
		removed = conn.removed;
		pthread_mutex_unlock(&conn.lock);
		rv = nng_aio_result(aio);
		if (rv == 0)
			continue;
		if (step == 0)
			msg = nng_aio_get_msg(aio);
		if (rv == NNG_ECANCELED || rv == NNG_ECONNRESET || rv == NNG_ECONNSHUT || removed) {
			code = denied();
			goto out;
		}
		if (rv == NNG_ETIMEDOUT)
			fprintf(stderr,
				"membrokerctl: membrokerd at %s did not answer within %d ms\n", url,
				timeout_ms);
		else
			fprintf(stderr, "membrokerctl: %s: %s\n", url, nng_strerror(rv));
		code = EXIT_DOWN;
		goto out;
	}
	msg = nng_aio_get_msg(aio);
	*out =
	    membroker__admin__v1__admin_response__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
	if (*out == NULL) {
		fprintf(stderr,
			"membrokerctl: the broker sent an answer this version cannot read\n");
		code = EXIT_BROKER;
		goto out;
	}
	code = 0;
out:
	if (msg != NULL)
		nng_msg_free(msg);
	if (aio != NULL) {
		nng_aio_stop(aio);
		nng_aio_free(aio);
	}
	nng_close(sock);
	return code;
}

/* ---- output ---- */

static void print_json(json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							     JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static void add_u64(json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_uint64(v));
}

static void add_str(json_object *o, const char *key, const char *v)
{
	json_object_object_add(o, key, json_object_new_string(v ? v : ""));
}

static void status_json(const Membroker__Admin__V1__StatusReply *s)
{
	json_object *o = json_object_new_object();
	json_object *levels = json_object_new_array();
	json_object *groups = json_object_new_array();
	json_object *waits = json_object_new_object();

	add_str(o, "version", s->version);
	add_u64(o, "pid", s->pid);
	add_u64(o, "uptime_seconds", s->uptime_seconds);
	add_u64(o, "budget", s->budget);
	add_u64(o, "committed", s->committed);
	add_u64(o, "memory_load", s->memory_load);
	add_u64(o, "pressure", s->pressure);
	add_str(o, "pressure_name", pressure_name(s->pressure));
	add_u64(o, "sessions", s->sessions);
	add_u64(o, "waiters", s->waiters);
	add_u64(o, "watchers", s->watchers);
	add_u64(o, "client_max", s->client_max);
	for (size_t i = 0; i < s->n_levels; i++) {
		const Membroker__Admin__V1__LevelInfo *l = s->levels[i];
		json_object *lo = json_object_new_object();
		add_u64(lo, "level", l->level);
		add_str(lo, "name", l->level < 3 ? level_names[l->level] : "unknown");
		add_u64(lo, "ceiling_permille", l->ceiling_permille);
		add_u64(lo, "ceiling", l->ceiling);
		add_u64(lo, "wait_ms", l->wait_ms);
		add_u64(lo, "waiters", l->waiters);
		add_u64(lo, "committed_by_max_level", l->committed_by_max_level);
		add_u64(lo, "sessions_by_max_level", l->sessions_by_max_level);
		add_u64(lo, "committed", l->committed);
		json_object_array_add(levels, lo);
	}
	json_object_object_add(o, "levels", levels);
	add_u64(o, "reclaimed", s->reclaimed);
	add_u64(o, "credit", s->credit);
	add_u64(o, "credit_revoked", s->credit_revoked);
	add_u64(o, "commit_credit", s->commit_credit);
	add_u64(o, "offences", s->offences);
	add_u64(o, "refusals", s->refusals);
	add_u64(waits, "granted", s->waits_granted);
	add_u64(waits, "timed_out", s->waits_timed_out);
	add_u64(waits, "abandoned", s->waits_abandoned);
	json_object_object_add(o, "waits", waits);
	add_u64(o, "requests", s->requests);
	add_u64(o, "protocol_errors", s->protocol_errors);
	for (size_t i = 0; i < s->n_groups; i++) {
		const Membroker__Admin__V1__GroupInfo *g = s->groups[i];
		json_object *go = json_object_new_object();
		add_str(go, "name", g->name);
		add_u64(go, "max", g->max);
		add_u64(go, "reserve", g->reserve);
		add_u64(go, "committed", g->committed);
		add_u64(go, "sessions", g->sessions);
		json_object_array_add(groups, go);
	}
	json_object_object_add(o, "groups", groups);
	print_json(o);
}

static void status_text(const Membroker__Admin__V1__StatusReply *s)
{
	char a[32], b[32], c[32];

	printf("membrokerd %s, pid %u, up %s\n", s->version, s->pid,
	       duration(s->uptime_seconds, a, sizeof(a)));
	printf("budget      %s\n", human(s->budget, a, sizeof(a)));
	printf("committed   %s (%u%%)\n", human(s->committed, a, sizeof(a)), s->memory_load);
	printf("pressure    %s memory\n", pressure_name(s->pressure));
	printf("clients     %u (%u listening for notifications)\n", s->sessions, s->watchers);
	printf("waiting     %u\n", s->waiters);
	printf("client max  %s\n", s->client_max ? human(s->client_max, a, sizeof(a)) : "none");
	printf("\n%-10s %12s %7s %8s %8s %8s %14s %14s\n", "LEVEL", "CEILING", "SHARE", "WAIT",
	       "WAITING", "CLIENTS", "COMMITTED", "AT LEVEL");
	for (size_t i = 0; i < s->n_levels; i++) {
		const Membroker__Admin__V1__LevelInfo *l = s->levels[i];
		char share[16], wait[16], c[32];
		snprintf(share, sizeof(share), "%u.%u%%", l->ceiling_permille / 10,
			 l->ceiling_permille % 10);
		snprintf(wait, sizeof(wait), "%u ms", l->wait_ms);
		printf("%-10s %12s %7s %8s %8u %8u %14s %14s\n",
		       l->level < 3 ? level_names[l->level] : "?", human(l->ceiling, a, sizeof(a)),
		       share, wait, l->waiters, l->sessions_by_max_level,
		       human(l->committed_by_max_level, b, sizeof(b)),
		       human(l->committed, c, sizeof(c)));
	}
	printf("(CLIENTS and COMMITTED: by the highest level each client committed at; AT LEVEL: "
	       "pages committed at that level)\n");
	if (s->n_groups > 0) {
		printf("\n%-20s %12s %12s %12s %8s\n", "GROUP", "COMMITTED", "MAX", "RESERVE",
		       "CLIENTS");
		for (size_t i = 0; i < s->n_groups; i++) {
			const Membroker__Admin__V1__GroupInfo *g = s->groups[i];
			printf("%-20s %12s %12s %12s %8u\n", g->name,
			       human(g->committed, a, sizeof(a)),
			       g->max ? human(g->max, b, sizeof(b)) : "none",
			       human(g->reserve, c, sizeof(c)), g->sessions);
		}
	}
	printf("\nrefusals    %" PRIu64 "\n", s->refusals);
	printf("waits       %" PRIu64 " granted, %" PRIu64 " timed out, %" PRIu64 " abandoned\n",
	       s->waits_granted, s->waits_timed_out, s->waits_abandoned);
	printf("reclaimed   %s\n", human(s->reclaimed, a, sizeof(a)));
	printf("credit      %s unused (%s per client), %s taken back\n",
	       human(s->credit, a, sizeof(a)), human(s->commit_credit, b, sizeof(b)),
	       human(s->credit_revoked, c, sizeof(c)));
	printf("offences    %" PRIu64 "\n", s->offences);
	printf("requests    %" PRIu64 " (%" PRIu64 " protocol errors)\n", s->requests,
	       s->protocol_errors);
}

static void clients_json(const Membroker__Admin__V1__ClientsReply *r)
{
	json_object *o = json_object_new_object();
	json_object *arr = json_object_new_array();

	for (size_t i = 0; i < r->n_clients; i++) {
		const Membroker__Admin__V1__ClientInfo *c = r->clients[i];
		json_object *co = json_object_new_object();
		add_u64(co, "session_id", c->session_id);
		add_u64(co, "pid", c->pid);
		add_u64(co, "uid", c->uid);
		add_u64(co, "gid", c->gid);
		add_str(co, "name", c->name);
		add_str(co, "group", c->group);
		add_u64(co, "reserved", c->reserved);
		add_u64(co, "committed", c->committed);
		add_u64(co, "reservations", c->reservations);
		add_u64(co, "max_level", c->max_level);
		json_object *at = json_object_new_array();
		for (size_t l = 0; l < c->n_committed_at_level; l++)
			json_object_array_add(at, json_object_new_uint64(c->committed_at_level[l]));
		json_object_object_add(co, "committed_at_level", at);
		add_u64(co, "age_seconds", c->age_seconds);
		add_u64(co, "offences", c->offences);
		add_u64(co, "credit", c->credit);
		add_str(co, "state", c->state);
		json_object_array_add(arr, co);
	}
	json_object_object_add(o, "clients", arr);
	print_json(o);
}

static void clients_text(const Membroker__Admin__V1__ClientsReply *r)
{
	char a[32], b[32], c[32];

	printf("%8s %8s %6s %6s %12s %12s %6s %-9s %8s %4s %-12s %s\n", "SESSION", "PID", "UID",
	       "GID", "COMMITTED", "RESERVED", "RES", "LEVEL", "AGE", "OFF", "GROUP", "NAME");
	for (size_t i = 0; i < r->n_clients; i++) {
		const Membroker__Admin__V1__ClientInfo *ci = r->clients[i];
		char id[24];
		if (ci->session_id)
			snprintf(id, sizeof(id), "%" PRIu64, ci->session_id);
		else
			snprintf(id, sizeof(id), "-");
		printf("%8s %8u %6u %6u %12s %12s %6" PRIu64 " %-9s %8s %4u %-12s %s\n", id,
		       ci->pid, ci->uid, ci->gid, human(ci->committed, a, sizeof(a)),
		       human(ci->reserved, b, sizeof(b)), ci->reservations,
		       ci->max_level < 3 ? level_names[ci->max_level] : "?",
		       duration(ci->age_seconds, c, sizeof(c)), ci->offences,
		       ci->group[0] ? ci->group : "-", ci->name[0] ? ci->name : "-");
	}
	if (r->n_clients == 0)
		printf("(no clients)\n");
}

/* ---- main ---- */

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"address", required_argument, NULL, 'a'}, {"json", no_argument, NULL, 'j'},
	    {"timeout", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},       {NULL, 0, NULL, 0},
	};
	AdminRequest req = MEMBROKER__ADMIN__V1__ADMIN_REQUEST__INIT;
	Membroker__Admin__V1__Status st = MEMBROKER__ADMIN__V1__STATUS__INIT;
	Membroker__Admin__V1__Clients cl = MEMBROKER__ADMIN__V1__CLIENTS__INIT;
	Membroker__Admin__V1__SetBudget sb = MEMBROKER__ADMIN__V1__SET_BUDGET__INIT;
	Membroker__Admin__V1__Reload rl = MEMBROKER__ADMIN__V1__RELOAD__INIT;
	Membroker__Admin__V1__Metrics me = MEMBROKER__ADMIN__V1__METRICS__INIT;
	const char *address = NULL, *cmd;
	bool json = false;
	int timeout_ms = DEFAULT_TIMEOUT_MS, c, code;
	char rpc[512], url[600];
	AdminResponse *resp = NULL;

	while ((c = getopt_long(argc, argv, "+a:jt:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'a':
			address = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 't': {
			char *end;
			long v = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || v <= 0 || v > 3600000) {
				fprintf(stderr,
					"membrokerctl: invalid timeout '%s' (milliseconds)\n",
					optarg);
				return EXIT_USAGE;
			}
			timeout_ms = (int)v;
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("membrokerctl %d.%d.%d\n", MB_VERSION_MAJOR, MB_VERSION_MINOR,
			       MB_VERSION_PATCH);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "membrokerctl: no command given\n");
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[optind++];
	if (strcmp(cmd, "set-budget") == 0) {
		if (argc - optind != 1) {
			fprintf(stderr, "membrokerctl: set-budget takes one SIZE (e.g. 4G)\n");
			return EXIT_USAGE;
		}
		if (mb_parse_size(argv[optind], 0, &sb.bytes) != 0 || sb.bytes < (1ULL << 20)) {
			fprintf(
			    stderr,
			    "membrokerctl: invalid size '%s' (want bytes with an optional K, M, "
			    "G or T suffix, at least 1M)\n",
			    argv[optind]);
			return EXIT_USAGE;
		}
		req.op_case = MEMBROKER__ADMIN__V1__ADMIN_REQUEST__OP_SET_BUDGET;
		req.set_budget = &sb;
	} else {
		if (argc - optind != 0) {
			fprintf(stderr, "membrokerctl: %s takes no arguments\n", cmd);
			return EXIT_USAGE;
		}
		if (strcmp(cmd, "status") == 0) {
			req.op_case = MEMBROKER__ADMIN__V1__ADMIN_REQUEST__OP_STATUS;
			req.status = &st;
		} else if (strcmp(cmd, "clients") == 0) {
			req.op_case = MEMBROKER__ADMIN__V1__ADMIN_REQUEST__OP_CLIENTS;
			req.clients = &cl;
		} else if (strcmp(cmd, "reload") == 0) {
			req.op_case = MEMBROKER__ADMIN__V1__ADMIN_REQUEST__OP_RELOAD;
			req.reload = &rl;
		} else if (strcmp(cmd, "metrics") == 0) {
			req.op_case = MEMBROKER__ADMIN__V1__ADMIN_REQUEST__OP_METRICS;
			req.metrics = &me;
		} else {
			fprintf(stderr, "membrokerctl: unknown command '%s'\n", cmd);
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (mb_address_resolve(address, rpc, sizeof(rpc)) != 0 ||
	    snprintf(url, sizeof(url), "%s" ADMIN_SUFFIX, rpc) >= (int)sizeof(url)) {
		fprintf(
		    stderr,
		    "membrokerctl: invalid address '%s' (want ipc:///path or abstract://name)\n",
		    address		     ? address
		    : getenv(MB_ADDRESS_ENV) ? getenv(MB_ADDRESS_ENV)
					     : "");
		return EXIT_USAGE;
	}
	signal(SIGPIPE, SIG_IGN);

	code = call(url, &req, timeout_ms, &resp);
	if (code != 0)
		return code;
	if ((HRESULT)resp->hresult == E_ACCESSDENIED) {
		membroker__admin__v1__admin_response__free_unpacked(resp, NULL);
		return denied();
	}
	if ((HRESULT)resp->hresult != S_OK) {
		fprintf(stderr, "membrokerctl: %s: %s (%s, 0x%08X)\n", cmd,
			resp->detail[0] ? resp->detail : "failed",
			mb_hresult_name((HRESULT)resp->hresult), resp->hresult);
		membroker__admin__v1__admin_response__free_unpacked(resp, NULL);
		return EXIT_BROKER;
	}
	code = 0;
	switch (req.op_case) {
	case MEMBROKER__ADMIN__V1__ADMIN_REQUEST__OP_STATUS:
		if (resp->reply_case != MEMBROKER__ADMIN__V1__ADMIN_RESPONSE__REPLY_STATUS)
			goto bad;
		if (json)
			status_json(resp->status);
		else
			status_text(resp->status);
		break;
	case MEMBROKER__ADMIN__V1__ADMIN_REQUEST__OP_CLIENTS:
		if (resp->reply_case != MEMBROKER__ADMIN__V1__ADMIN_RESPONSE__REPLY_CLIENTS)
			goto bad;
		if (json)
			clients_json(resp->clients);
		else
			clients_text(resp->clients);
		break;
	case MEMBROKER__ADMIN__V1__ADMIN_REQUEST__OP_METRICS:
		if (resp->reply_case != MEMBROKER__ADMIN__V1__ADMIN_RESPONSE__REPLY_METRICS)
			goto bad;
		fputs(resp->metrics->text, stdout);
		break;
	default:
		if (json) {
			json_object *o = json_object_new_object();
			json_object_object_add(o, "ok", json_object_new_boolean(1));
			add_str(o, "detail", resp->detail);
			if (req.op_case == MEMBROKER__ADMIN__V1__ADMIN_REQUEST__OP_SET_BUDGET)
				add_u64(o, "budget", sb.bytes);
			print_json(o);
		} else if (resp->detail[0]) {
			printf("%s\n", resp->detail);
		}
		break;
	}
	membroker__admin__v1__admin_response__free_unpacked(resp, NULL);
	if (fflush(stdout) != 0) {
		fprintf(stderr, "membrokerctl: cannot write the output: %s\n", strerror(errno));
		return EXIT_BROKER;
	}
	return code;
bad:
	fprintf(stderr, "membrokerctl: the broker answered %s with something else\n", cmd);
	membroker__admin__v1__admin_response__free_unpacked(resp, NULL);
	return EXIT_BROKER;
}
