/*
 * admin.h: the admin channel of membrokerd, served to membrokerctl.
 *
 * A separate nng REP socket beside the RPC socket (its name with ".admin" appended, mode 0660),
 * speaking membroker.admin.v1 (proto/admin.proto): status, per-client usage, Prometheus metrics,
 * live budget changes and configuration reload. Only root, the broker's own user and members
 * (primary or supplementary) of the admin groups may use it: the peer credentials (SO_PEERCRED,
 * SO_PEERGROUPS) of every request are checked before anything else, and other peers get
 * E_ACCESSDENIED.
 */
#ifndef MB_ADMIN_H
#define MB_ADMIN_H

#include <stddef.h>
#include <sys/types.h>

#include "broker.h"

/* Appended to the RPC socket's name to form the admin socket's. */
#define MB_ADMIN_SUFFIX ".admin"

/* The group (systemd/membroker.sysusers) whose members may administer the broker. */
#define MB_ADMIN_GROUP "membroker-admin"

/* The smallest budget set-budget accepts. */
#define MB_ADMIN_MIN_BUDGET (1ULL << 20)

typedef struct mb_admin mb_admin;

/* Writes rpc_url + ".admin" into buf. Returns 0, or -EINVAL when it does not fit. */
int mb_admin_address(const char *rpc_url, char *buf, size_t len);

/* Looks up MB_ADMIN_GROUP: writes its gid to gids[0] and returns 1, or returns 0 when the group
 * does not exist (then only root and the broker's own user may administer). */
int mb_admin_default_gids(gid_t *gids, int max);

/*
 * Listens on the admin address of rpc_url. admin_gids (n entries, may be NULL/0) are the groups
 * whose members may administer the broker besides root and the broker's own uid. Reload requests
 * send SIGHUP to this process (main's signal loop reloads the configuration). The socket file gets
 * mode 0660 and, where the broker may (root, or a member of the group), admin_gids[0] as its group.
 * Returns 0 and *out,
 * or an nng error (NNG_EADDRINUSE when another broker serves it).
 */
int mb_admin_start(mb_broker *b, const char *rpc_url, const gid_t *admin_gids, int n,
		   mb_admin **out);

/* Closes the admin socket and frees the server. NULL is a no-op. */
void mb_admin_stop(mb_admin *a);

/*
 * Handles one encoded AdminRequest (exposed for tests and the fuzzer): *reply gets a malloc'd
 * encoded AdminResponse and *reply_len its size. Returns 0, or -1 when the request cannot be
 * decoded or memory ran out. The caller checks the peer's credentials first.
 */
int mb_admin_handle(mb_broker *b, const void *req, size_t len, void **reply, size_t *reply_len);

/* Credentials check: 1 when a peer with uid/gid (and the supplementary groups it connected with,
 * SO_PEERGROUPS of its connection, see mb_peer_groups) may administer, else 0. */
int mb_admin_peer_allowed(const mb_admin *a, pid_t pid, uid_t uid, gid_t gid);

#endif
