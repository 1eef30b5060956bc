/*
 * main.c: membrokerd: options, budget, signals, start-up and orderly shutdown.
 */
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <systemd/sd-daemon.h>

#include "admin.h"
#include "audit.h"
#include "broker.h"
#include "clock.h"
#include "deathwatch.h"
#include "fdstore.h"
#include "fdserver.h"
#include "heartbeat.h"
#include "log.h"
#include "mb_address.h"
#include "options.h"
#include "restore.h"
#include "server.h"
#include "snapshot.h"
#include "sysmem.h"

/* Why a broker not started by the service (or by root) cannot use the system address. */
static const char default_hint[] =
    " (the system address's directory is made by the service unit, or by membrokerd run as "
    "root; a per-user broker needs --listen or MEMBROKER_ADDRESS, e.g. "
    "ipc://$XDG_RUNTIME_DIR/membroker.sock, given to its clients too)";

/* Creates the socket's directory if missing: 0755 for the system-wide /run/membroker (clients of
 * other users must reach the 0660 socket), 0700 for a per-user runtime directory. */
static int ensure_dir(const char *url)
{
	const char *path = mb_address_ipc_path(url);
	char dir[512];
	char *slash;

	if (path == NULL)
		return 0;
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, strcmp(dir, "/run/membroker") == 0 ? 0755 : 0700) != 0 && errno != EEXIST) {
		mb_log(LOG_ERR, "cannot create %s: %s%s", dir, strerror(errno),
		       strcmp(url, MB_DEFAULT_ADDRESS) == 0 ? default_hint : "");
		return -1;
	}
	return 0;
}

/* given: --budget, else the configuration's budget, else NULL for the default. */
static int choose_budget(const char *given, uint64_t *budget)
{
	const char *source = "";
	uint64_t avail = mb_sysmem_available(&source);

	if (given != NULL) {
		if (mb_parse_size(given, avail, budget) != 0 || *budget < (1 << 20)) {
			mb_log(LOG_ERR,
			       "invalid budget '%s' (want e.g. 512M, 4G or 25%%, at least 1M)",
			       given);
			return -1;
		}
		mb_log(LOG_INFO, "budget %" PRIu64 " MiB (%s)", *budget >> 20, given);
		return 0;
	}
	if (avail == 0) {
		mb_log(LOG_ERR, "cannot tell how much memory this machine has; give --budget");
		return -1;
	}
	*budget = avail / 2;
	mb_log(LOG_INFO, "budget %" PRIu64 " MiB (half of %" PRIu64 " MiB, %s)", *budget >> 20,
	       avail >> 20, source);
	return 0;
}

/* A group name or number. */
static int resolve_group(const char *name, gid_t *gid)
{
	struct group *g = getgrnam(name);
	char *end;
	unsigned long n;

	if (g != NULL) {
		*gid = g->gr_gid;
		return 0;
	}
	n = strtoul(name, &end, 10);
	if (*name == '\0' || *end != '\0')
		return -1;
	*gid = (gid_t)n;
	return 0;
}

/* The configuration file merged under the command line. 0, or -1 after logging why. */
static int load_config(const mb_options *o, mb_config *conf)
{
	const char *path = o->config ? o->config : MB_DEFAULT_CONFIG;
	char err[512];
	int rv = mb_config_load(path, conf, err, sizeof(err));

	if (rv == -ENOENT && o->config == NULL)
		return 0; /* no file: built-in defaults */
	if (rv == -ENOENT) {
		mb_log(LOG_ERR, "configuration file %s does not exist", path);
		return -1;
	}
	if (rv != 0) {
		mb_log(LOG_ERR, "invalid configuration: %s", err);
		return -1;
	}
	mb_log(LOG_INFO, "configuration %s: %d group(s)", path, conf->ngroups);
	return 0;
}

/* Budget, ceilings, waits, groups and limits from options over configuration, into the broker. */
static int apply(const mb_options *o, const mb_config *conf, mb_broker *b)
{
	uint64_t budget;
	mb_ledger l;

	if (choose_budget(o->budget	    ? o->budget
			  : conf->budget[0] ? conf->budget
					    : NULL,
			  &budget) != 0)
		return -1;
	mb_ledger_init(&l, budget);
	for (int i = 0; i < MB_LEVELS; i++) {
		if (o->ceilings_set)
			l.ceiling_permille[i] = o->ceiling_permille[i];
		else if (conf->ceilings_set)
			l.ceiling_permille[i] = conf->ceiling_permille[i];
		if (o->waits_set)
			l.wait_ms[i] = o->wait_ms[i];
		else if (conf->waits_set)
			l.wait_ms[i] = conf->wait_ms[i];
	}
	pthread_mutex_lock(&b->lock);
	b->books.ledger.budget = l.budget;
	memcpy(b->books.ledger.ceiling_permille, l.ceiling_permille, sizeof(l.ceiling_permille));
	memcpy(b->books.ledger.wait_ms, l.wait_ms, sizeof(l.wait_ms));
	pthread_mutex_unlock(&b->lock);
	mb_config effective = *conf;
	if (o->commit_credit_set)
		effective.commit_credit = o->commit_credit;
	if (o->offender_refusal_ms)
		effective.offender_refusal_ms = o->offender_refusal_ms;
	/* Credit is taken a page at a time: whole pages only. */
	effective.commit_credit &= ~(uint64_t)(MB_PAGE_SIZE - 1);
	mb_broker_apply_config(b, &effective);
	return 0;
}

/* Takes back the sections systemd's descriptor store kept across a restart (restore.h). */
static void restore_sections(mb_broker *b, mb_fdstore *st, uint64_t configured_budget)
{
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names);
	mb_restore_stats rs;

	if (n <= 0) {
		if (n < 0)
			mb_log(LOG_WARNING, "cannot read the descriptors systemd passed: %s",
			       strerror(-n));
		return;
	}
	int *fds = calloc((size_t)n, sizeof(*fds));
	for (int i = 0; fds != NULL && i < n; i++)
		fds[i] = SD_LISTEN_FDS_START + i;
	if (fds != NULL) {
		mb_restore(b, st, fds, names, (size_t)n, configured_budget, &rs);
		mb_log(LOG_INFO,
		       "restored %u section(s) with their books and %u from what they hold "
		       "(%s); %u freed (their process exited), %u dropped; %" PRIu64
		       " MiB charged of a budget of %" PRIu64 " MiB",
		       rs.exact, rs.bounded,
		       rs.snapshot_used ? "books snapshot used"
		       : rs.snapshot	? "books snapshot refused"
					: "no books snapshot",
		       rs.freed, rs.dropped, rs.charged >> 20, rs.budget >> 20);
	} else {
		mb_log(LOG_ERR, "out of memory: the stored sections are not restored");
		for (int i = 0; i < n; i++)
			close(SD_LISTEN_FDS_START + i);
	}
	free(fds);
	for (int i = 0; names != NULL && i < n; i++)
		free(names[i]);
	free(names);
}

/* Stopping with a store: the books go into it for the next broker (snapshot.h). Returns the
 * number of waiting requests that were answered. */
static uint32_t leave_snapshot(mb_broker *b, mb_fdstore *st, uint64_t configured_budget)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	uint32_t abandoned = 0;
	int fd, rv;

	if (mb_broker_freeze(b, configured_budget, &buf, &len, &abandoned) != 0) {
		mb_log(LOG_ERR, "out of memory: no books snapshot; the next broker restores the "
				"sections from what they hold");
		return abandoned;
	}
	fd = mb_snapshot_to_memfd(buf, len);
	free(buf);
	if (fd < 0) {
		mb_log(LOG_ERR, "cannot write the books snapshot: %s", strerror(-fd));
		return abandoned;
	}
	rv = mb_fdstore_keep_snapshot(st, fd, 3000);
	close(fd);
	if (rv < 0)
		mb_log(LOG_WARNING, "the books snapshot may not have reached systemd: %s",
		       strerror(-rv));
	else
		mb_log(LOG_INFO, "books snapshot of %zu bytes stored for the next broker", len);
	return abandoned;
}

struct teardown {
	mb_admin *admin;
	mb_fdserver *fdserver;
	mb_server *server;
	mb_broker *broker;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	bool done;
};

static void *teardown_main(void *arg)
{
	struct teardown *td = arg;

	mb_admin_stop(td->admin);
	mb_fdserver_stop(td->fdserver);
	mb_server_stop(td->server);
	mb_broker_fini(td->broker);
	pthread_mutex_lock(&td->lock);
	td->done = true;
	pthread_cond_signal(&td->cv);
	pthread_mutex_unlock(&td->lock);
	return NULL;
}

int main(int argc, char **argv)
{
	mb_options opts;
	mb_config conf;
	char url[512];
	uint32_t audit_ms;
	mb_broker broker;
	mb_server *server = NULL;
	mb_fdserver *fdserver = NULL;
	mb_deathwatch *deathwatch = NULL;
	mb_admin *admin = NULL;
	mb_fdstore *fdstore = NULL;
	uint64_t configured_budget;
	gid_t admin_gids[1];
	mb_heartbeat heartbeat;
	uint64_t next_audit, next_sweep = 0;
	sigset_t sigs;
	int rv;

	rv = mb_options_parse(argc, argv, &opts);
	if (rv != 0)
		return rv > 0 ? 0 : 2;
	/* Every client's section is a descriptor of this process. A dumpable process lets any
	 * process of its uid open them through /proc/<pid>/fd, take them with pidfd_getfd or
	 * ptrace it, so a client started under the broker's user would reach every other client's
	 * memory. Not dumpable, all of that needs CAP_SYS_PTRACE (and the broker leaves no core).
	 */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		mb_log(LOG_WARNING, "cannot make the broker non-dumpable: %s", strerror(errno));
	if (opts.log_level >= 0)
		mb_log_set_level(opts.log_level);
	if (load_config(&opts, &conf) != 0)
		return 2;
	if (opts.log_level < 0 && conf.log_level >= 0)
		mb_log_set_level(conf.log_level);
	audit_ms = opts.audit_ms   ? opts.audit_ms
		   : conf.audit_ms ? conf.audit_ms
				   : MB_AUDIT_DEFAULT_MS;
	if (mb_address_resolve(opts.listen	? opts.listen
			       : conf.listen[0] ? conf.listen
						: NULL,
			       url, sizeof(url)) != 0) {
		mb_log(LOG_ERR, "invalid address '%s' (want ipc:///path or abstract://name)",
		       opts.listen ? opts.listen : getenv(MB_ADDRESS_ENV));
		return 2;
	}
	if (ensure_dir(url) != 0)
		return 1;

	/* Blocked before nng starts its threads, so they inherit the mask and the signals come to
	 * sigwaitinfo below. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (mb_broker_init(&broker, 0) != 0) {
		mb_log(LOG_ERR, "out of memory");
		return 1;
	}
	/* A broken invariant is fatal where tests look for it (books.h); a production broker
	 * counts it, logs the path and keeps serving. */
#if defined(__SANITIZE_ADDRESS__)
	broker.books.abort_on_violation = true;
#endif
	if (getenv("MEMBROKER_ABORT_ON_INVARIANT") != NULL)
		broker.books.abort_on_violation = true;
	if (apply(&opts, &conf, &broker) != 0) {
		mb_broker_fini(&broker);
		return 2;
	}
	configured_budget = broker.books.ledger.budget;
	/* Asking nng to listen on a live broker's socket would make it connect and hang up, which
	 * stops that broker's nng 1.5.2 listener (nng #1518). A full round trip is harmless. */
	if (mb_probe(url, 5000) == 0) {
		mb_log(LOG_ERR, "another membrokerd is already serving %s", url);
		mb_broker_fini(&broker);
		return 1;
	}
	rv = mb_fdstore_open(&fdstore);
	if (rv != 0)
		mb_log(LOG_WARNING, "no descriptor store (%s): sections do not survive a restart",
		       strerror(-rv));
	broker.fdstore = fdstore;
	restore_sections(&broker, fdstore, configured_budget);
	int mode = conf.socket_mode ? (int)conf.socket_mode : 0660;
	gid_t gid = (gid_t)-1;
	if (conf.socket_group[0] != '\0' && resolve_group(conf.socket_group, &gid) != 0) {
		mb_log(LOG_ERR, "socket_group '%s' is not a group", conf.socket_group);
		mb_broker_fini(&broker);
		return 2;
	}
	rv = mb_server_start(&broker, url, opts.contexts, mode, gid, &server);
	if (rv == NNG_EADDRINUSE) {
		mb_log(LOG_ERR, "another membrokerd is already serving %s", url);
		mb_broker_fini(&broker);
		return 1;
	}
	if (rv != 0) {
		mb_log(LOG_ERR, "cannot listen on %s: %s%s", url, nng_strerror(rv),
		       rv == NNG_EPERM && strcmp(url, MB_DEFAULT_ADDRESS) == 0 ? default_hint : "");
		mb_broker_fini(&broker);
		return 1;
	}
	rv = mb_fdserver_start(&broker, url, mode, gid, &fdserver);
	if (rv != 0) {
		mb_log(LOG_ERR, "cannot open the section socket beside %s: %s", url, strerror(-rv));
		mb_server_stop(server);
		mb_broker_fini(&broker);
		return 1;
	}
	rv = mb_admin_start(&broker, url, admin_gids, mb_admin_default_gids(admin_gids, 1), &admin);
	if (rv != 0)
		mb_log(LOG_WARNING, "no admin channel beside %s (%s): membrokerctl will not work",
		       url, nng_strerror(rv));
	rv = mb_deathwatch_start(&broker, &deathwatch);
	if (rv != 0)
		mb_log(LOG_WARNING,
		       "cannot watch client processes (%s): a dead client's memory "
		       "returns only when its connection closes",
		       strerror(-rv));
	mb_log(LOG_INFO, "serving %s", url);
	sd_notifyf(0, "READY=1\nSTATUS=serving %s, budget %" PRIu64 " MiB", url,
		   broker.books.ledger.budget >> 20);

	mb_heartbeat_init(&heartbeat, url);
	if (mb_heartbeat_start(&heartbeat) != 0)
		mb_log(LOG_WARNING, "cannot start the self-probe: no watchdog pings");
	mb_heartbeat_tick(&heartbeat, &broker);
	next_audit = mb_now_ms() + audit_ms;
	for (;;) {
		uint64_t sleep_ms = mb_heartbeat_sleep_ms(&heartbeat, audit_ms);
		struct timespec tick = {.tv_sec = (time_t)(sleep_ms / 1000),
					.tv_nsec = (long)(sleep_ms % 1000) * 1000000};
		siginfo_t si;
		int sig = sigtimedwait(&sigs, &si, &tick);
		if (sig < 0) {
			if (mb_now_ms() >= next_audit) {
				mb_broker_audit(&broker);
				next_audit = mb_now_ms() + audit_ms;
			}
			/* A backstop (the death watch frees sections at once): once a second. */
			if (mb_now_ms() >= next_sweep) {
				mb_broker_sweep_exited(&broker);
				next_sweep = mb_now_ms() + 1000;
			}
			mb_heartbeat_tick(&heartbeat, &broker);
			continue;
		}
		if (sig == SIGHUP) {
			mb_config next;
			sd_notify(0, "RELOADING=1");
			/* A bad file leaves the running configuration in place. */
			if (load_config(&opts, &next) == 0 && apply(&opts, &next, &broker) == 0) {
				configured_budget = broker.books.ledger.budget;
				mb_log(LOG_INFO, "configuration reloaded");
			} else
				mb_log(LOG_ERR, "reload refused; the running configuration stays");
			sd_notify(0, "READY=1");
			continue;
		}
		mb_log(LOG_INFO, "%s: shutting down", strsignal(sig));
		break;
	}
	sd_notify(0, "STOPPING=1");
	mb_heartbeat_fini(&heartbeat);
	/* Waiting commits get HOST_E_ABANDONED rather than a dropped connection: give their
	 * replies a moment to leave. With a store, the books go into it first. */
	if ((fdstore != NULL ? leave_snapshot(&broker, fdstore, configured_budget)
			     : mb_broker_abandon_all(&broker)) > 0 ||
	    fdstore != NULL)
		for (int i = 0; i < 200 && mb_server_busy(server) > 0; i++)
			usleep(5000);
	/* The death watch first: it closes connections, which must not race the sockets' close. */
	mb_deathwatch_stop(deathwatch);
	struct teardown td = {
	    .admin = admin, .fdserver = fdserver, .server = server, .broker = &broker};
	pthread_mutex_init(&td.lock, NULL);
	pthread_cond_init(&td.cv, NULL);
	pthread_t t;
	if (pthread_create(&t, NULL, teardown_main, &td) != 0) {
		teardown_main(&td);
	} else {
		/* nng 1.5.2 can deadlock in nng_close (nng #1543 and later fixes): a stop must
		 * not hang, and everything that matters (answers, the clients' memory) is done. */
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 5;
		pthread_mutex_lock(&td.lock);
		while (!td.done)
			if (pthread_cond_timedwait(&td.cv, &td.lock, &until) != 0)
				break;
		bool done = td.done;
		pthread_mutex_unlock(&td.lock);
		if (!done) {
			mb_log(LOG_WARNING,
			       "closing nng's sockets did not finish in 5 s; exiting anyway");
			_exit(0);
		}
		pthread_join(t, NULL);
	}
	mb_fdstore_close(fdstore);
	mb_log(LOG_INFO, "stopped");
	return 0;
}
