/* dmtcp.h: the application API and the plugin API of libdmtcp_inject.so.
 *
 * Application API: every function is declared weak and wrapped in a macro of
 * the same name, so a program built with this header runs unchanged without
 * DMTCP (the calls then return DMTCP_NOT_PRESENT) and needs no link flag:
 * under dmtcp-run the preloaded library provides the symbols. All functions
 * can be called from any thread; none may be called from a signal handler.
 *
 * Plugin API (below the application API): source-compatible with both
 * generations of DMTCP's plugin interface, the current one (a
 * DmtcpPluginDescriptor_t declared with DMTCP_DECL_PLUGIN) and the older one
 * (a function dmtcp_process_event that passes the event on with
 * NEXT_DMTCP_PROCESS_EVENT). docs/plugins.md is the plugin writer's guide:
 * which event comes when, in which thread, and what a hook may do.
 */
#ifndef DMTCP_H
#define DMTCP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <dlfcn.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DMTCP_NOT_PRESENT 3      /* no DMTCP library in this process */
#define DMTCP_IS_PRESENT 4       /* dmtcp_get_*_status: running under DMTCP */
#define DMTCP_AFTER_CHECKPOINT 1 /* checkpoint done; the original continues */
#define DMTCP_AFTER_RESTART 2    /* this process was restarted from it */

/* 1 when the process runs under DMTCP (the library is loaded). */
int dmtcp_is_enabled(void) __attribute__((weak));
/* Checkpoints the whole computation and waits for the images to be durable.
 * Returns DMTCP_AFTER_CHECKPOINT in the original process, DMTCP_AFTER_RESTART
 * when the process was restarted from this checkpoint, DMTCP_NOT_PRESENT
 * without DMTCP, -1 on failure (errno set; EDEADLK inside this thread's own
 * dmtcp_disable_ckpt() section, or inside a plugin hook). */
int dmtcp_checkpoint(void) __attribute__((weak));
/* Critical section: a checkpoint requested between dmtcp_disable_ckpt() and
 * the matching dmtcp_enable_ckpt() waits until the section ends. Nestable,
 * per thread (enable must be called by the thread that disabled). Return 1,
 * DMTCP_NOT_PRESENT without DMTCP, -1 on an unmatched enable. */
int dmtcp_disable_ckpt(void) __attribute__((weak));
int dmtcp_enable_ckpt(void) __attribute__((weak));
/* Number of checkpoints this process went through (a process restarted from
 * checkpoint N sees N); 0 without DMTCP. */
int dmtcp_get_generation(void) __attribute__((weak));
/* Number of times this process was restarted; 0 without DMTCP. */
int dmtcp_get_restart_count(void) __attribute__((weak));
/* This process's checkpoints (as dmtcp_get_generation) and restarts, stored
 * through the pointers. Returns DMTCP_IS_PRESENT, or DMTCP_NOT_PRESENT
 * (arguments untouched) without DMTCP. */
int dmtcp_get_local_status(int *numCheckpoints, int *numRestarts) __attribute__((weak));

/* Safe calls: a function-like macro does not expand itself, so the inner
 * name is the (possibly null) weak symbol. */
#define dmtcp_is_enabled() (dmtcp_is_enabled ? dmtcp_is_enabled() : 0)
#define dmtcp_checkpoint() (dmtcp_checkpoint ? dmtcp_checkpoint() : DMTCP_NOT_PRESENT)
#define dmtcp_disable_ckpt() (dmtcp_disable_ckpt ? dmtcp_disable_ckpt() : DMTCP_NOT_PRESENT)
#define dmtcp_enable_ckpt() (dmtcp_enable_ckpt ? dmtcp_enable_ckpt() : DMTCP_NOT_PRESENT)
#define dmtcp_get_generation() (dmtcp_get_generation ? dmtcp_get_generation() : 0)
#define dmtcp_get_restart_count() (dmtcp_get_restart_count ? dmtcp_get_restart_count() : 0)
#define dmtcp_get_local_status(c, r) \
    (dmtcp_get_local_status ? dmtcp_get_local_status(c, r) : DMTCP_NOT_PRESENT)

/* 1 when the DMTCP library is present. */
static inline int dmtcp_present(void) { return dmtcp_is_enabled(); }

/* ------------------------------------------------------------------------
 * Plugin API
 * ------------------------------------------------------------------------ */

/* Weak like the application API, so a program (not only a plugin) may call
 * them without link flags; without DMTCP they are null: check
 * `if (dmtcp_is_enabled())` first. */
#define DMTCP_WEAK __attribute__((weak))

/* The DMTCP release this interface follows. A build may define its own
 * (-DDMTCP_PACKAGE_VERSION='"3.0.0"'); it is recorded, not checked. */
#ifndef DMTCP_PACKAGE_VERSION
#define DMTCP_PACKAGE_VERSION "3.0.0"
#endif
/* Plugin interface generation; a descriptor with another value is refused
 * (one line naming the plugin, before the program starts). */
#define DMTCP_PLUGIN_API_VERSION "3"
#ifndef PLUGIN_API_VERSION
#define PLUGIN_API_VERSION DMTCP_PLUGIN_API_VERSION
#endif

/* When a hook is called. The first group is the current generation's; the
 * second the older generation's names, delivered only to
 * dmtcp_process_event chains, at the moments docs/plugins.md lists. Events
 * not delivered by this implementation are kept so plugins that name them
 * compile. */
typedef enum eDmtcpEvent {
  DMTCP_EVENT_INIT,             /* library set up in this process (before main) */
  DMTCP_EVENT_EXIT,             /* the process exits normally (atexit) */
  DMTCP_EVENT_PRE_EXEC,         /* execve/execv/execvp/execvpe: before (preExec) */
  DMTCP_EVENT_POST_EXEC,        /* in the new program, after INIT (postExec) */
  DMTCP_EVENT_ATFORK_PREPARE,   /* fork(): in the forking thread, before */
  DMTCP_EVENT_ATFORK_PARENT,    /* fork(): in the parent, after */
  DMTCP_EVENT_ATFORK_CHILD,     /* fork(): in the child, after */
  DMTCP_EVENT_ATFORK_FAILED,    /* not delivered */
  DMTCP_EVENT_VFORK_PREPARE,    /* not delivered */
  DMTCP_EVENT_VFORK_PARENT,     /* not delivered */
  DMTCP_EVENT_VFORK_CHILD,      /* not delivered */
  DMTCP_EVENT_VFORK_FAILED,     /* not delivered */
  DMTCP_EVENT_PTHREAD_START,    /* in a new thread, before its start routine */
  DMTCP_EVENT_PTHREAD_EXIT,     /* in a thread calling pthread_exit */
  DMTCP_EVENT_PTHREAD_RETURN,   /* in a thread whose start routine returned */
  DMTCP_EVENT_PRESUSPEND,       /* checkpoint requested; the program still runs */
  DMTCP_EVENT_PRECHECKPOINT,    /* user threads stopped; the image is taken next */
  DMTCP_EVENT_RESUME,           /* image taken; user threads still stopped */
  DMTCP_EVENT_RESTART,          /* restored from an image; user threads stopped */
  DMTCP_EVENT_RUNNING,          /* user threads run again (after RESUME/RESTART) */
  DMTCP_EVENT_THREAD_RESUME,    /* not delivered */
  DMTCP_EVENT_OPEN_FD,          /* not delivered */
  DMTCP_EVENT_REOPEN_FD,        /* not delivered */
  DMTCP_EVENT_CLOSE_FD,         /* not delivered */
  DMTCP_EVENT_DUP_FD,           /* not delivered */
  DMTCP_EVENT_VIRTUAL_TO_REAL_PATH, /* not delivered */
  DMTCP_EVENT_REAL_TO_VIRTUAL_PATH, /* not delivered */

  /* Older generation (dmtcp_process_event). */
  DMTCP_EVENT_WAIT_FOR_SUSPEND_MSG = 64, /* at PRESUSPEND */
  DMTCP_EVENT_THREADS_SUSPEND,  /* at PRECHECKPOINT, first */
  DMTCP_EVENT_SUSPENDED,        /* at PRECHECKPOINT */
  DMTCP_EVENT_LEADER_ELECTION,  /* at PRECHECKPOINT */
  DMTCP_EVENT_DRAIN,            /* at PRECHECKPOINT */
  DMTCP_EVENT_WRITE_CKPT,       /* at PRECHECKPOINT, last */
  DMTCP_EVENT_REFILL,           /* at RESUME and RESTART (refillInfo.isRestart) */
  DMTCP_EVENT_REGISTER_NAME_SERVICE_DATA, /* at RESTART: publish */
  DMTCP_EVENT_SEND_QUERIES,     /* at RESTART, after a global barrier: query */
  DMTCP_EVENT_THREADS_RESUME,   /* at RESUME and RESTART, last (resumeInfo.isRestart) */
  DMTCP_EVENT_PRE_SUSPEND_USER_THREAD, /* not delivered */
  DMTCP_EVENT_RESUME_USER_THREAD,      /* not delivered */
  DMTCP_EVENT_ATFORK_PREPARE_OLD,      /* not delivered (use ATFORK_PREPARE) */

  DMTCP_NEXT_EVENT_NUMBER
} DmtcpEvent_t;

/* What comes with an event (only the member of that event is set). */
typedef union _DmtcpEventData_t {
  struct {
    /* A memory file kept across the exec: what a plugin writes here, the
     * same plugin reads at POST_EXEC in the new program (from offset 0). */
    int serializationFd;
    /* The exec's file, its argv (maxArgs entries) and envp (maxEnv). */
    char *filename;
    size_t maxArgs;
    const char **argv;
    size_t maxEnv;
    const char **envp;
  } preExec;
  struct {
    int serializationFd;
  } postExec;
  struct {
    int isRestart;             /* SEND_QUERIES, REGISTER_NAME_SERVICE_DATA */
  } nameserviceInfo;
  struct {
    int isRestart;             /* THREADS_RESUME, RESUME, RESTART */
  } resumeInfo;
  struct {
    int isRestart;             /* REFILL */
  } refillInfo;
  struct {
    int fd;                    /* not used */
  } serializerInfo;
  struct {
    int fd;
    const char *path;
    int flags;
    mode_t mode;
  } openFd;
  struct {
    int fd;
    const char *path;
  } reopenFd;
  struct {
    int fd;
  } closeFd;
  struct {
    int oldFd;
    int newFd;
  } dupFd;
  struct {
    char *path;
  } virtualToRealPath;
  struct {
    char *path;
  } realToVirtualPath;
  char _reserved[64];
} DmtcpEventData_t;

/* A plugin of the current generation describes itself with one of these
 * and declares it with DMTCP_DECL_PLUGIN(descriptor). */
typedef struct {
  const char *pluginApiVersion; /* DMTCP_PLUGIN_API_VERSION */
  const char *dmtcpVersion;     /* DMTCP_PACKAGE_VERSION */
  const char *pluginName;       /* short name, used in error messages */
  const char *authorName;
  const char *authorEmail;
  const char *description;
  void (*event_hook)(const DmtcpEvent_t event, DmtcpEventData_t *data);
} DmtcpPluginDescriptor_t;

/* Called by DMTCP_DECL_PLUGIN; keeps a copy of the descriptor. Plugins are
 * registered in load order (--with-plugin order). */
void dmtcp_register_plugin(DmtcpPluginDescriptor_t descr) DMTCP_WEAK;
/* This project's extension: the hook is called only for the events whose
 * bit is set in event_mask (bit n = DmtcpEvent_t n). Used by language
 * bindings that must not run while user threads are stopped (Python). */
void dmtcp_register_plugin_events(DmtcpPluginDescriptor_t descr, uint64_t event_mask) DMTCP_WEAK;
#define DMTCP_EVENT_BIT(e) (1ull << (e))

/* The next definition of `func` after the calling object, in load order
 * (dlsym(RTLD_NEXT)), looked up once and cached: how a wrapper calls what it
 * wraps. Wrappers nest in load order: the first plugin's wrapper is called
 * first. */
#ifndef RTLD_NEXT
#define RTLD_NEXT ((void *)-1l)
#endif
#define NEXT_FNC(func)                                                    \
  ({                                                                      \
    static __typeof__(&func) dmtcp_next_##func##_ = NULL;                 \
    if (dmtcp_next_##func##_ == NULL) {                                   \
      dmtcp_next_##func##_ = (__typeof__(&func))dlsym(RTLD_NEXT, #func);  \
    }                                                                     \
    dmtcp_next_##func##_;                                                 \
  })

/* Declares a plugin: the library calls the first dmtcp_initialize_plugin in
 * load order; each registers its descriptor and calls the next one. */
#define DMTCP_DECL_PLUGIN(descr)                                          \
  __attribute__((visibility("default"))) void dmtcp_initialize_plugin(void) \
  {                                                                       \
    dmtcp_register_plugin(descr);                                         \
    void (*dmtcp_next_init_)(void) =                                      \
        (void (*)(void))dlsym(RTLD_NEXT, "dmtcp_initialize_plugin");      \
    if (dmtcp_next_init_ != NULL) {                                       \
      dmtcp_next_init_();                                                 \
    }                                                                     \
  }

/* Older generation: a plugin (or the program) defines
 *   void dmtcp_process_event(DmtcpEvent_t event, DmtcpEventData_t *data)
 * and passes every event on with NEXT_DMTCP_PROCESS_EVENT(event, data).
 * Calling it zero times hides the event from the plugins loaded later. */
void dmtcp_process_event(DmtcpEvent_t event, DmtcpEventData_t *data);
#define NEXT_DMTCP_PROCESS_EVENT(event, data)                             \
  do {                                                                    \
    void (*dmtcp_next_pe_)(DmtcpEvent_t, DmtcpEventData_t *) =            \
        (void (*)(DmtcpEvent_t, DmtcpEventData_t *))dlsym(                \
            RTLD_NEXT, "dmtcp_process_event");                            \
    if (dmtcp_next_pe_ != NULL) {                                         \
      dmtcp_next_pe_((event), (data));                                    \
    }                                                                     \
  } while (0)
/* Older spelling of the same thing. */
#define DMTCP_NEXT_EVENT_HOOK(event, data) NEXT_DMTCP_PROCESS_EVENT(event, data)

/* Barriers, only inside PRESUSPEND, PRECHECKPOINT, RESUME and RESTART hooks:
 * return once every process of the computation that has plugins reached a
 * barrier (the same sequence of barriers in every process). 0 on success,
 * -1 outside such a hook. The local form waits for the processes of this
 * host; with one host they are the same. */
int dmtcp_global_barrier(const char *barrier) DMTCP_WEAK;
int dmtcp_local_barrier(const char *barrier) DMTCP_WEAK;

/* Utility calls. Strings are owned by the library and stay valid until the
 * next call of the same function in this process. */
/* Directory checkpoint images go to ($DMTCP_CHECKPOINT_DIR, else the
 * coordinator's, else the working directory). */
const char *dmtcp_get_ckpt_dir(void) DMTCP_WEAK;
/* Path this process's image is expected at (directory + the image name
 * without the computation-specific parts; see docs/plugins.md). */
const char *dmtcp_get_ckpt_filename(void) DMTCP_WEAK;
/* Temporary directory for plugin files ($DMTCP_TMPDIR, $TMPDIR or /tmp). */
const char *dmtcp_get_tmpdir(void) DMTCP_WEAK;
/* This process's id, unique in the computation and kept across restarts:
 * "<hostid>-<pid>-<start time>". */
const char *dmtcp_get_uniquepid_str(void) DMTCP_WEAK;
/* The computation's id (from the coordinator; "" if unreachable). */
const char *dmtcp_get_computation_id_str(void) DMTCP_WEAK;
/* The coordinator's computation generation (same as dmtcp_get_generation). */
uint32_t dmtcp_get_computation_generation(void) DMTCP_WEAK;
/* 1 while no checkpoint is in progress in this process (0 inside hooks of
 * PRESUSPEND to RESUME/RESTART). */
int dmtcp_is_running_state(void) DMTCP_WEAK;
/* 1 inside a RESTART hook or later in a restarted process. */
int dmtcp_is_restarted(void) DMTCP_WEAK;
/* Pids are the same inside and outside: the computation has its own pid
 * namespace, restored with the same numbers. */
pid_t dmtcp_real_to_virtual_pid(pid_t realPid) DMTCP_WEAK;
pid_t dmtcp_virtual_to_real_pid(pid_t virtualPid) DMTCP_WEAK;
/* Number of processes of the computation and whether it is running (no
 * checkpoint in progress). Returns DMTCP_IS_PRESENT, or DMTCP_NOT_PRESENT
 * (arguments untouched) without DMTCP or when the coordinator cannot be
 * asked. */
int dmtcp_get_coordinator_status(int *numPeers, int *isRunning) DMTCP_WEAK;
#define dmtcp_get_coordinator_status(p, r) \
    (dmtcp_get_coordinator_status ? dmtcp_get_coordinator_status(p, r) : DMTCP_NOT_PRESENT)

/* The value `name` has in the environment dmtcp-restart was run with. */
typedef enum {
  RESTART_ENV_SUCCESS = 0,
  RESTART_ENV_NOTFOUND = -1,
  RESTART_ENV_TOOLONG = -2,
  RESTART_ENV_DMTCP_BUF_TOO_SMALL = -3,
  RESTART_ENV_INTERNAL_ERROR = -4,
  RESTART_ENV_NULL_PTR = -5
} DmtcpGetRestartEnvErr_t;
DmtcpGetRestartEnvErr_t dmtcp_get_restart_env(const char *name, char *value,
                                              size_t maxvaluelen) DMTCP_WEAK;

/* Publish/subscribe (the coordinator's database, per computation and
 * generation; keys and values are bytes, values up to 4 MiB). `id` names a
 * database (a plugin's own). Publishing and querying are separated by a
 * global barrier at restart (see docs/plugins.md). */
/* Stores val under key. 1 on success, 0 on failure. */
int dmtcp_send_key_val_pair_to_coordinator(const char *id, const void *key,
                                           uint32_t key_len, const void *val,
                                           uint32_t val_len) DMTCP_WEAK;
int dmtcp_send_key_val_pair_to_coordinator_sync(const char *id,
                                                const void *key,
                                                uint32_t key_len,
                                                const void *val,
                                                uint32_t val_len) DMTCP_WEAK;
/* Copies the value of key into val (at most *val_len bytes; *val_len is set
 * to the value's full length). 1 when found, 0 when not (or on failure). */
int dmtcp_send_query_to_coordinator(const char *id, const void *key,
                                    uint32_t key_len, void *val,
                                    uint32_t *val_len) DMTCP_WEAK;

/* kvdb: the same database with string keys and values and atomic integer
 * operations. */
typedef enum {
  KVDB_RESPONSE_SUCCESS = 0,
  KVDB_RESPONSE_INVALID_REQUEST = -1,
  KVDB_RESPONSE_DB_NOT_FOUND = -2,
  KVDB_RESPONSE_KEY_NOT_FOUND = -3,
  KVDB_RESPONSE_ERROR = -4
} DmtcpKvdbResponse_t;
typedef enum {
  KVDB_SET = 1,    /* value = operand */
  KVDB_INCRBY,     /* value += operand (a missing key is 0) */
  KVDB_AND,
  KVDB_OR,
  KVDB_XOR,
  KVDB_MIN,
  KVDB_MAX,
  KVDB_GET         /* operand ignored */
} DmtcpKvdbOp_t;
int dmtcp_kvdb_set(const char *id, const char *key, const char *val) DMTCP_WEAK;
/* Copies the value (NUL-terminated, truncated to maxlen-1) into val. */
int dmtcp_kvdb_get(const char *id, const char *key, char *val, size_t maxlen) DMTCP_WEAK;
/* Applies op atomically; *oldval (if not NULL) gets the value before. */
int dmtcp_kvdb_request64(DmtcpKvdbOp_t op, const char *id, const char *key,
                         int64_t operand, int64_t *oldval) DMTCP_WEAK;
int dmtcp_kvdb_get64(const char *id, const char *key, int64_t *val) DMTCP_WEAK;

#ifdef __cplusplus
}
#endif

#endif
