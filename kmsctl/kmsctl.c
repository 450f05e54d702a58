/*
 * kmsctl: the command-line client of kmsd.
 *
 *   kmsctl [--addr HOST:PORT] [--as NAME | --cert F --key F --ca F]
 *          [--json] [--timeout SEC] COMMAND ...
 *
 * This file is the core: global options, the dispatch through the
 * command table (kmsctl/cmdtab.c), help, and how a run ends (exit codes;
 * under --json, an error as one JSON object on stderr).  Each command
 * group lives in its own file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "kmsctl.h"
#include "kmserr.h"
#include "version.h"

/* What the global options asked for besides a command. */
struct mode {
	int help;
	int version;
};

static const char *const exit_meanings[] = {
	[KMSCTL_EXIT_OK] = "success",
	[KMSCTL_EXIT_VERIFY] = "verification failed",
	[KMSCTL_EXIT_USAGE] = "usage error",
	[KMSCTL_EXIT_TRANSPORT] = "transport error",
	[KMSCTL_EXIT_REFUSED] = "refused by the server",
	[KMSCTL_EXIT_IO] = "local I/O error",
};

const char *
kmsctl_exit_meaning(int code)
{
	if (code < 0 || (size_t)code >= sizeof(exit_meanings) /
	    sizeof(exit_meanings[0]))
		return "unknown";
	return exit_meanings[code];
}

static void
overview(FILE *f)
{
	const struct kmsctl_cmd *c;
	char word[64];

	fprintf(f,
"usage: kmsctl [--addr HOST:PORT] [--as NAME | --cert F --key F --ca F]\n"
"              [--json] [--timeout SEC] COMMAND ...\n"
"       kmsctl help [COMMAND [SUBCOMMAND]]    kmsctl COMMAND --help\n"
"       kmsctl --version\n"
"\n"
"commands (* needs no server and no certificate):\n");
	for (c = kmsctl_cmds; c->group != NULL; c++) {
		snprintf(word, sizeof(word), "%s%s%s", c->group,
		    c->name != NULL ? " " : "", c->name != NULL ? c->name : "");
		fprintf(f, "  %-17s %s %s\n", word,
		    c->offline ? "*" : c->offline_if != NULL ? "+" : " ",
		    c->summary);
	}
	fprintf(f,
"  (+: offline with --pubkey)\n"
"\n"
"Global options may go before or after the command.  --addr defaults to\n"
"$KMS_ADDR, else 127.0.0.1:7443; --as NAME uses $KMS_HOME/pki/clients/\n"
"NAME.pem and .key and $KMS_HOME/pki/ca.pem ($KMS_HOME defaults to ./var);\n"
"--ca F alone replaces that CA.  --timeout is per call (default 30 s).\n"
"--json prints results as JSON on stdout and an error as one JSON object\n"
"on stderr: {\"error\", \"exit_code\", \"meaning\"[, \"status\"]}.\n"
"\n"
"exit codes:\n");
	for (size_t i = 0; i < sizeof(exit_meanings) / sizeof(exit_meanings[0]);
	    i++)
		fprintf(f, "  %zu  %s\n", i, exit_meanings[i]);
	fprintf(f,
"\n"
"  1: a signature or the audit log; 3: no connection, TLS failure, deadline\n"
"  without an answer; 4: the server's status and message are printed;\n"
"  5: unreadable input, unwritable output.\n");
}

static void
cmd_help(FILE *f, const struct kmsctl_cmd *c)
{
	fprintf(f, "usage: kmsctl %s\n\n%s\n", c->usage, c->summary);
	if (c->offline)
		fprintf(f, "It needs no server and no certificate.\n");
	if (c->help != NULL && *c->help != '\0')
		fprintf(f, "\n%s", c->help);
}

/* The rows of group, or of group and sub when sub is given. */
static int
print_help(FILE *f, const char *group, const char *sub)
{
	const struct kmsctl_cmd *c;
	int n = 0;

	for (c = kmsctl_cmds; c->group != NULL; c++) {
		if (strcmp(c->group, group) != 0 || (sub != NULL &&
		    (c->name == NULL || strcmp(c->name, sub) != 0)))
			continue;
		if (n++ > 0)
			fprintf(f, "\n");
		cmd_help(f, c);
	}
	return n;
}

/* The row for argv[1] [argv[2]], or NULL after a usage message. */
static const struct kmsctl_cmd *
find_cmd(int argc, char **argv, int help)
{
	const struct kmsctl_cmd *c, *any = NULL;

	for (c = kmsctl_cmds; c->group != NULL; c++) {
		if (strcmp(c->group, argv[1]) != 0)
			continue;
		any = c;
		if (c->name == NULL || (argc > 2 &&
		    strcmp(c->name, argv[2]) == 0))
			return c;
	}
	if (any == NULL) {
		fprintf(stderr, "kmsctl: unknown command \"%s\"\n", argv[1]);
		die_usage(NULL);
		return NULL;
	}
	if (help)
		return any;
	fprintf(stderr, "kmsctl: %s: %s; one of:", argv[1], argc > 2 ?
	    "unknown subcommand" : "which subcommand?");
	for (c = kmsctl_cmds; c->group != NULL; c++)
		if (strcmp(c->group, argv[1]) == 0)
			fprintf(stderr, " %s", c->name);
	fprintf(stderr, "\n");
	die_usage(NULL);
	return NULL;
}

int
die_usage(const char *msg)
{
	if (msg != NULL)
		fprintf(stderr, "kmsctl: %s\n", msg);
	fprintf(stderr, "kmsctl: try kmsctl help COMMAND\n");
	return KMSCTL_EXIT_USAGE;
}

static int
set_cred(struct ctx *x)
{
	const char *home = getenv("KMS_HOME");

	if (home == NULL || *home == '\0')
		home = "var";
	if (x->as != NULL) {
		if (x->as[0] == '\0' || x->as[0] == '.' ||
		    strchr(x->as, '/') != NULL)
			return die_usage("--as: a dev identity name like ci");
		if (x->o.cert_file == NULL) {
			snprintf(x->cert, sizeof(x->cert),
			    "%s/pki/clients/%s.pem", home, x->as);
			x->o.cert_file = x->cert;
		}
		if (x->o.key_file == NULL) {
			snprintf(x->key, sizeof(x->key),
			    "%s/pki/clients/%s.key", home, x->as);
			x->o.key_file = x->key;
		}
	}
	if (x->o.ca_file == NULL) {
		snprintf(x->ca, sizeof(x->ca), "%s/pki/ca.pem", home);
		x->o.ca_file = x->ca;
	}
	if (x->o.cert_file == NULL || x->o.key_file == NULL)
		return die_usage("no client certificate: use --as NAME or "
		    "--cert F --key F");
	return 0;
}

/* The global options; each takes a value except --json. */
static const char *const global_names[] = {
	"--addr", "--as", "--cert", "--key", "--ca", "--timeout", "--json"
};

/*
 * Options that a command defines for itself: after that command word they
 * keep the command's meaning (`bundle encrypt --key NAME` names a kms key,
 * not a TLS key file).
 */
static const struct {
	const char *cmd;
	const char *sub;		/* NULL: every subcommand */
	const char *opt;
} command_owns[] = {
	{ "bundle", NULL, "--key" },
	{ "ota", NULL, "--key" },
	{ "audit", "witness", "--key" },	/* the witness's own key */
};

static int
command_owns_opt(const char *cmd, const char *sub, const char *opt)
{
	size_t i;

	for (i = 0; cmd != NULL &&
	    i < sizeof(command_owns) / sizeof(command_owns[0]); i++)
		if (strcmp(cmd, command_owns[i].cmd) == 0 &&
		    (command_owns[i].sub == NULL || (sub != NULL &&
		    strcmp(sub, command_owns[i].sub) == 0)) &&
		    strcmp(opt, command_owns[i].opt) == 0)
			return 1;
	return 0;
}

static int
set_global(struct ctx *x, const char *name, char *v)
{
	char *end;
	long t;

	if (strcmp(name, "--addr") == 0)
		x->o.addr = v;
	else if (strcmp(name, "--as") == 0)
		x->as = v;
	else if (strcmp(name, "--cert") == 0)
		x->o.cert_file = v;
	else if (strcmp(name, "--key") == 0)
		x->o.key_file = v;
	else if (strcmp(name, "--ca") == 0)
		x->o.ca_file = v;
	else if (strcmp(name, "--timeout") == 0) {
		errno = 0;
		t = strtol(v, &end, 10);
		if (errno != 0 || *v == '\0' || *end != '\0' || t <= 0 ||
		    t > 24 * 3600)
			return die_usage("--timeout: seconds, 1 to 86400");
		x->o.timeout_seconds = (int)t;
	}
	return 0;
}

/*
 * Takes the global options out of argv wherever they are (before or after
 * the command word; not after "--"), leaving the command and its own
 * arguments in order.  --help anywhere and --version before the command
 * are noted in *m.
 */
static int
global_opts(struct ctx *x, struct mode *m, int *argc, char **argv)
{
	const char *cmd = NULL, *sub = NULL, *name;
	char *a, *v;
	size_t k, nl;
	int i, j = 0, r, rest = 0;

	for (i = 1; i < *argc; i++) {
		a = argv[i];
		name = NULL;
		if (!rest && strcmp(a, "--") == 0)
			rest = 1;
		else if (!rest && (strcmp(a, "--help") == 0 ||
		    strcmp(a, "-h") == 0)) {
			m->help = 1;
			continue;
		} else if (!rest && cmd == NULL &&
		    strcmp(a, "--version") == 0) {
			m->version = 1;
			continue;
		}
		for (k = 0; !rest && k < sizeof(global_names) /
		    sizeof(global_names[0]); k++) {
			nl = strlen(global_names[k]);
			if (strncmp(a, global_names[k], nl) == 0 &&
			    (a[nl] == '\0' || a[nl] == '='))
				name = global_names[k];
		}
		if (name != NULL && command_owns_opt(cmd, sub, name))
			name = NULL;
		if (name == NULL) {
			if (cmd != NULL && sub == NULL && a[0] != '-')
				sub = a;
			if (cmd == NULL && a[0] != '-')
				cmd = a;
			argv[++j] = a;
			continue;
		}
		nl = strlen(name);
		if (strcmp(name, "--json") == 0) {
			if (a[nl] == '=')
				return die_usage("--json takes no value");
			x->json = 1;
			continue;
		}
		if (a[nl] == '=')
			v = a + nl + 1;
		else if (i + 1 < *argc)
			v = argv[++i];
		else {
			fprintf(stderr, "kmsctl: %s needs a value\n", name);
			return die_usage(NULL);
		}
		if ((r = set_global(x, name, v)) != 0)
			return r;
	}
	*argc = j + 1;
	argv[*argc] = NULL;
	return 0;
}


/* `kmsctl help [GROUP [SUB]]` */
static int
help_cmd(int argc, char **argv)
{
	if (argc < 3) {
		overview(stdout);
		return KMSCTL_EXIT_OK;
	}
	if (argc > 4 || print_help(stdout, argv[2], argc > 3 ? argv[3] :
	    NULL) == 0) {
		fprintf(stderr, "kmsctl: help: no command \"%s%s%s\"\n",
		    argv[2], argc > 3 ? " " : "", argc > 3 ? argv[3] : "");
		return die_usage(NULL);
	}
	return KMSCTL_EXIT_OK;
}

static int
run(struct ctx *x, int argc, char **argv)
{
	const struct kmsctl_cmd *c;
	struct mode m = { 0 };
	int r;

	if ((r = global_opts(x, &m, &argc, argv)) != 0)
		return r;
	if (m.version) {
		printf("kmsctl %s\n", KMS_VERSION);
		return KMSCTL_EXIT_OK;
	}
	if (argc < 2) {
		overview(m.help ? stdout : stderr);
		return m.help ? KMSCTL_EXIT_OK : KMSCTL_EXIT_USAGE;
	}
	if (strcmp(argv[1], "help") == 0)
		return help_cmd(argc, argv);
	if ((c = find_cmd(argc, argv, m.help)) == NULL)
		return KMSCTL_EXIT_USAGE;
	if (m.help) {
		if (c->name != NULL && argc > 2 && strcmp(c->name, argv[2]) == 0)
			cmd_help(stdout, c);
		else
			print_help(stdout, c->group, NULL);
		return KMSCTL_EXIT_OK;
	}
	if (x->o.addr == NULL)
		x->o.addr = getenv("KMS_ADDR");
	if (x->o.addr == NULL || *x->o.addr == '\0')
		x->o.addr = "127.0.0.1:7443";
	/* Offline commands need no credentials. */
	if (!c->offline && (c->offline_if == NULL ||
	    !c->offline_if(argc - 1, argv + 1)) && (r = set_cred(x)) != 0)
		return r;
	return c->run(x, argc - 1, argv + 1);
}

/* 1 when --json is among the global options (before any "--"). */
static int
wants_json(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--json") == 0)
			return 1;
	return 0;
}

/*
 * Under --json, a failed run reports on stderr as one JSON object: the
 * messages the command printed (without the "kmsctl: " prefix and the
 * help hint), the exit code, its meaning, and the gRPC status of a
 * refused call.  A successful run's notes pass through as text.
 */
static void
json_error(FILE *err, const char *text, int code, int grpc_code)
{
	const char *p, *nl;
	json_t *o, *msgs;
	char *all = NULL, *line;
	size_t n;

	if (code == 0) {
		fputs(text, err);
		return;
	}
	msgs = json_array();
	for (p = text; msgs != NULL && *p != '\0'; p = *nl ? nl + 1 : nl) {
		nl = strchr(p, '\n');
		if (nl == NULL)
			nl = p + strlen(p);
		n = (size_t)(nl - p);
		if (n >= 8 && strncmp(p, "kmsctl: ", 8) == 0) {
			p += 8;
			n -= 8;
		} else if (json_array_size(msgs) > 0)
			continue;	/* a usage block after the message */
		if (n == 0 || strncmp(p, "try kmsctl help", 15) == 0)
			continue;
		if ((line = strndup(p, n)) != NULL)
			json_array_append_new(msgs, json_string(line));
		free(line);
	}
	if (msgs != NULL && json_array_size(msgs) > 0) {
		size_t i, len = 0;

		for (i = 0; i < json_array_size(msgs); i++)
			len += strlen(json_string_value(
			    json_array_get(msgs, i))) + 2;
		if ((all = calloc(1, len + 1)) != NULL)
			for (i = 0; i < json_array_size(msgs); i++) {
				if (i > 0)
					strcat(all, "; ");
				strcat(all, json_string_value(
				    json_array_get(msgs, i)));
			}
	}
	o = json_pack("{s:s, s:i, s:s}", "error", all != NULL ? all :
	    kmsctl_exit_meaning(code), "exit_code", code, "meaning",
	    kmsctl_exit_meaning(code));
	if (o != NULL && grpc_code >= 0)
		json_object_set_new(o, "status",
		    json_string(kms_grpc_code_name(grpc_code)));
	if (o != NULL) {
		json_dumpf(o, err, JSON_COMPACT | JSON_PRESERVE_ORDER);
		fputc('\n', err);
	} else
		fprintf(err, "{\"error\":\"out of memory\",\"exit_code\":%d}\n",
		    code);
	json_decref(o);
	json_decref(msgs);
	free(all);
	fflush(err);
}

int
main(int argc, char **argv)
{
	static struct ctx x;
	FILE *err = stderr, *mem = NULL;
	char *text = NULL;
	size_t len = 0;
	int r;

	x.grpc_code = -1;
	/*
	 * Under --json every message meant for stderr is collected (every
	 * command file writes to stderr) and turned into one object at the
	 * end.  The sanitizers write to the descriptor, not through stderr,
	 * so their reports are not held back.
	 */
	if (wants_json(argc, argv) &&
	    (mem = open_memstream(&text, &len)) != NULL)
		stderr = mem;
	r = run(&x, argc, argv);
	kmsclient_close(x.c);
	if (mem != NULL) {
		stderr = err;
		if (fclose(mem) == 0 && text != NULL)
			json_error(err, text, r, x.grpc_code);
		free(text);
	}
	return r;
}
