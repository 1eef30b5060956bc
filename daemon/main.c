/*
 * main.c: membrokerd: options, budget, signals, start-up and orderly shutdown.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nng/nng.h>
#include <systemd/sd-daemon.h>

#include "broker.h"
#include "deathwatch.h"
#include "fdserver.h"
#include "log.h"
#include "mb_address.h"
#include "options.h"
#include "server.h"
#include "sysmem.h"

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
		mb_log(LOG_ERR, "cannot create %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

static int choose_budget(const mb_options *o, uint64_t *budget)
{
	const char *source = "";
	uint64_t avail = mb_sysmem_available(&source);

	if (o->budget != NULL) {
		if (mb_parse_size(o->budget, avail, budget) != 0 || *budget < (1 << 20)) {
			mb_log(LOG_ERR, "invalid --budget '%s' (want e.g. 512M, 4G or 25%%, at least 1M)",
			       o->budget);
			return -1;
		}
		mb_log(LOG_INFO, "budget %" PRIu64 " MiB (--budget %s)", *budget >> 20, o->budget);
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

int main(int argc, char **argv)
{
	mb_options opts;
	char url[512];
	uint64_t budget;
	mb_broker broker;
	mb_server *server = NULL;
	mb_fdserver *fdserver = NULL;
	mb_deathwatch *deathwatch = NULL;
	sigset_t sigs;
	int rv;

	rv = mb_options_parse(argc, argv, &opts);
	if (rv != 0)
		return rv > 0 ? 0 : 2;
	mb_log_set_level(opts.log_level);
	if (mb_address_resolve(opts.listen, url, sizeof(url)) != 0) {
		mb_log(LOG_ERR, "invalid address '%s' (want ipc:///path or abstract://name)",
		       opts.listen ? opts.listen : getenv(MB_ADDRESS_ENV));
		return 2;
	}
	if (choose_budget(&opts, &budget) != 0)
		return 2;
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

	if (mb_broker_init(&broker, budget) != 0) {
		mb_log(LOG_ERR, "out of memory");
		return 1;
	}
	for (int i = 0; i < MB_LEVELS; i++) {
		if (opts.ceilings_set)
			broker.ledger.ceiling_permille[i] = opts.ceiling_permille[i];
		if (opts.waits_set)
			broker.ledger.wait_ms[i] = opts.wait_ms[i];
	}
	rv = mb_server_start(&broker, url, opts.contexts, &server);
	if (rv == NNG_EADDRINUSE) {
		mb_log(LOG_ERR, "another membrokerd is already serving %s", url);
		mb_broker_fini(&broker);
		return 1;
	}
	if (rv != 0) {
		mb_log(LOG_ERR, "cannot listen on %s: %s", url, nng_strerror(rv));
		mb_broker_fini(&broker);
		return 1;
	}
	rv = mb_fdserver_start(&broker, url, &fdserver);
	if (rv != 0) {
		mb_log(LOG_ERR, "cannot open the section socket beside %s: %s", url, strerror(-rv));
		mb_server_stop(server);
		mb_broker_fini(&broker);
		return 1;
	}
	rv = mb_deathwatch_start(&broker, &deathwatch);
	if (rv != 0)
		mb_log(LOG_WARNING, "cannot watch client processes (%s): a dead client's memory "
				    "returns only when its connection closes",
		       strerror(-rv));
	mb_log(LOG_INFO, "serving %s", url);
	sd_notifyf(0, "READY=1\nSTATUS=serving %s, budget %" PRIu64 " MiB", url, budget >> 20);

	for (;;) {
		struct timespec tick = {.tv_sec = opts.audit_ms / 1000,
					.tv_nsec = (long)(opts.audit_ms % 1000) * 1000000};
		siginfo_t si;
		int sig = sigtimedwait(&sigs, &si, &tick);
		if (sig < 0) {
			if (errno == EAGAIN)
				mb_broker_audit(&broker);
			continue;
		}
		if (sig == SIGHUP) {
			mb_log(LOG_INFO, "SIGHUP: no configuration file to reload");
			continue;
		}
		mb_log(LOG_INFO, "%s: shutting down", strsignal(sig));
		break;
	}
	sd_notify(0, "STOPPING=1");
	/* Waiting commits get HOST_E_ABANDONED rather than a dropped connection: give their
	 * replies a moment to leave. */
	if (mb_broker_abandon_all(&broker) > 0)
		for (int i = 0; i < 200 && mb_server_busy(server) > 0; i++)
			usleep(5000);
	mb_fdserver_stop(fdserver);
	mb_server_stop(server);
	mb_deathwatch_stop(deathwatch);
	mb_broker_fini(&broker);
	mb_log(LOG_INFO, "stopped");
	return 0;
}
