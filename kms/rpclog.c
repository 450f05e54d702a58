/*
 * rpclog.c: gRPC's own messages go through kmsd's log (same format, same
 * threshold), so that --log-format json gives one JSON object per line
 * for everything kmsd prints.
 */
#include <grpc/support/log.h>

#include "log.h"
#include "rpclog.h"

static void
grpc_to_log(gpr_log_func_args *a)
{
	enum log_level level;

	switch (a->severity) {
	case GPR_LOG_SEVERITY_ERROR:
		level = LOG_LEVEL_ERROR;
		break;
	case GPR_LOG_SEVERITY_INFO:
		level = LOG_LEVEL_INFO;
		break;
	default:
		level = LOG_LEVEL_DEBUG;
		break;
	}
	log_external(level, "grpc", a->file, a->line, a->message);
}

void
rpc_log_init(void)
{
	gpr_set_log_function(grpc_to_log);
}
