/*
 * server.h: the nng side of the broker: one REP socket, N context state machines, pipe events.
 */
#ifndef MB_SERVER_H
#define MB_SERVER_H

#include <sys/types.h>

#include "broker.h"

typedef struct mb_server mb_server;

/*
 * Listens on url (ipc:// or abstract://) with socket file mode `mode` and group gid ((gid_t)-1:
 * the daemon's) and starts `contexts` request state machines that hand requests to
 * mb_dispatch(). Returns 0 and *out, or an nng error (NNG_EADDRINUSE when a live broker already
 * serves url, NNG_EPERM when the group cannot be set).
 */
int mb_server_start(mb_broker *b, const char *url, int contexts, int mode, gid_t gid,
		    mb_server **out);

/* Contexts that are parked (waiting commits, watches) or sending a reply. */
int mb_server_busy(mb_server *srv);

/* Stops accepting, closes every connection (their sessions end) and frees the server. */
void mb_server_stop(mb_server *srv);

#endif
