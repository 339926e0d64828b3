/*
 * A small fake libnvidia-ml.so.1 for tests: the real pynvml loads it through ctypes, so the
 * ctypes layer (symbol names, struct layouts, buffer sizes, error mapping) runs for real.
 *
 * The machine it pretends to drive is read at nvmlInitWithFlags from the file named by the
 * FAKE_NVML_CONFIG environment variable, one fact per line:
 *
 *     <device> <key> <value...>
 *
 * <device> is -1 for the system, the GPU index, or 100000 + 8 * gpu + slot for a MIG device.
 * A value "!N" makes the call return NVML error N; a missing key returns NOT_SUPPORTED.
 * Compound answers have a key of their own ("pci", "fabric", ...) whose value is "ok" or "!N",
 * and their parts under "<key>.<part>". Byte strings are hex.
 *
 * Struct layouts follow nvml.h (go-nvml pkg/nvml/nvml.h), which is what pynvml's ctypes
 * structures must match; where pynvml is looser (the fabric state is one byte in nvml.h and a
 * c_uint in pynvml), the fake fills the padding with garbage as a real driver may.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
typedef struct fake_device { long id; } *nvmlDevice_t;

enum {
    OK = 0, ERR_UNINITIALIZED = 1, ERR_INVALID_ARGUMENT = 2, ERR_NOT_SUPPORTED = 3,
    ERR_NOT_FOUND = 6, ERR_INSUFFICIENT_SIZE = 7, ERR_ARGUMENT_VERSION_MISMATCH = 25,
};

#define SYSTEM (-1L)
#define MIG_BASE 100000L

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned char clusterUuid[16];
    nvmlReturn_t status;
    unsigned int cliqueId;
    unsigned char state; /* nvmlGpuFabricState_t */
    unsigned int healthMask;
} nvmlGpuFabricInfo_v2_t;
#define FABRIC_INFO_V2 ((unsigned int)(sizeof(nvmlGpuFabricInfo_v2_t) | (2u << 24)))

typedef struct { unsigned int environment, ccFeature, devToolsMode; } nvmlConfComputeSystemState_t;

typedef struct {
    unsigned int certChainSize, attestationCertChainSize;
    unsigned char certChain[0x1000];
    unsigned char attestationCertChain[0x1400];
} nvmlConfComputeGpuCertificate_t;

typedef struct {
    unsigned int isCecAttestationReportPresent, attestationReportSize, cecAttestationReportSize;
    unsigned char nonce[32];
    unsigned char attestationReport[0x2000];
    unsigned char cecAttestationReport[0x1000];
} nvmlConfComputeGpuAttestationReport_t;

struct entry { long dev; char *key; char *value; };
static struct entry *entries;
static size_t n_entries;
static int initialized;
static struct fake_device *handles;
static size_t n_handles;

static void load(const char *path) {
    FILE *f = path ? fopen(path, "r") : NULL;
    char *line = NULL;
    size_t cap = 0;
    if (!f) return;
    while (getline(&line, &cap, f) > 0) {
        char *key, *value, *end;
        long dev = strtol(line, &end, 10);
        if (end == line) continue;
        key = strtok(end, " \t\n");
        value = key ? strtok(NULL, "\n") : NULL;
        if (!key || !value) continue;
        entries = realloc(entries, (n_entries + 1) * sizeof *entries);
        entries[n_entries++] = (struct entry){dev, strdup(key), strdup(value)};
    }
    free(line);
    fclose(f);
}

static const char *find(long dev, const char *key) {
    for (size_t i = 0; i < n_entries; i++)
        if (entries[i].dev == dev && strcmp(entries[i].key, key) == 0) return entries[i].value;
    return NULL;
}

/* The status of a fact: OK, its "!N" error, or NOT_SUPPORTED when absent. */
static nvmlReturn_t status(long dev, const char *key) {
    const char *v;
    if (!initialized) return ERR_UNINITIALIZED;
    v = find(dev, key);
    if (!v) return ERR_NOT_SUPPORTED;
    return v[0] == '!' ? atoi(v + 1) : OK;
}

static nvmlReturn_t get_u64(long dev, const char *key, unsigned long long *out) {
    nvmlReturn_t rc = status(dev, key);
    if (rc == OK) *out = strtoull(find(dev, key), NULL, 0);
    return rc;
}

static nvmlReturn_t get_uint(long dev, const char *key, unsigned int *out) {
    unsigned long long v = 0;
    nvmlReturn_t rc = get_u64(dev, key, &v);
    if (rc == OK) *out = (unsigned int)v;
    return rc;
}

static nvmlReturn_t get_str(long dev, const char *key, char *buf, unsigned int len) {
    nvmlReturn_t rc = status(dev, key);
    if (rc != OK) return rc;
    if (strlen(find(dev, key)) + 1 > len) return ERR_INSUFFICIENT_SIZE;
    strcpy(buf, find(dev, key));
    return OK;
}

static unsigned int get_hex(long dev, const char *key, unsigned char *buf, unsigned int cap) {
    const char *v = find(dev, key);
    unsigned int n = 0;
    for (; v && v[0] && v[1] && n < cap; v += 2) {
        char byte[3] = {v[0], v[1], 0};
        buf[n++] = (unsigned char)strtoul(byte, NULL, 16);
    }
    return n;
}

static long dev_of(nvmlDevice_t d) { return d ? d->id : -2; }

static nvmlDevice_t handle_for(long id) {
    for (size_t i = 0; i < n_handles; i++)
        if (handles[i].id == id) return &handles[i];
    return NULL;
}

/* --- system ---------------------------------------------------------------------------- */

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    unsigned int count = 0;
    nvmlReturn_t rc;
    (void)flags;
    if (!entries) load(getenv("FAKE_NVML_CONFIG"));
    initialized = 1;
    if ((rc = status(SYSTEM, "init")) != OK) {
        initialized = 0;
        return rc;
    }
    get_uint(SYSTEM, "count", &count);
    free(handles);
    handles = calloc((size_t)count * 9 + 1, sizeof *handles);
    n_handles = 0;
    for (unsigned int g = 0; g < count; g++) {
        handles[n_handles++].id = g;
        for (long s = 0; s < 8; s++) handles[n_handles++].id = MIG_BASE + 8L * g + s;
    }
    return OK;
}

nvmlReturn_t nvmlShutdown(void) {
    if (!initialized) return ERR_UNINITIALIZED;
    initialized = 0;
    return OK;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    static char text[64];
    snprintf(text, sizeof text, "fake NVML error %d", result);
    return text;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *v, unsigned int n) { return get_str(SYSTEM, "driver_version", v, n); }
nvmlReturn_t nvmlSystemGetNVMLVersion(char *v, unsigned int n) { return get_str(SYSTEM, "nvml_version", v, n); }

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) {
    unsigned int u = 0;
    nvmlReturn_t rc = get_uint(SYSTEM, "cuda_version", &u);
    if (rc == OK) *v = (int)u;
    return rc;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) { return get_uint(SYSTEM, "count", count); }

nvmlReturn_t nvmlSystemGetConfComputeState(nvmlConfComputeSystemState_t *s) {
    nvmlReturn_t rc = status(SYSTEM, "cc_feature");
    if (rc != OK) return rc;
    memset(s, 0, sizeof *s);
    return get_uint(SYSTEM, "cc_feature", &s->ccFeature);
}

/* --- handles --------------------------------------------------------------------------- */

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    const char *failure = find(index, "handle"); /* "!N" for a lost or inaccessible GPU */
    if (!initialized) return ERR_UNINITIALIZED;
    if (failure && failure[0] == '!') return atoi(failure + 1);
    *device = handle_for(index);
    return *device ? OK : ERR_INVALID_ARGUMENT;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int i, nvmlDevice_t *m) {
    long id = MIG_BASE + 8L * dev_of(d) + i;
    if (!initialized) return ERR_UNINITIALIZED;
    if (i >= 8 || !find(id, "uuid")) return ERR_NOT_FOUND;
    *m = handle_for(id);
    return OK;
}

nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t d, unsigned int *is_mig) {
    *is_mig = dev_of(d) >= MIG_BASE;
    return initialized ? OK : ERR_UNINITIALIZED;
}

/* --- identity -------------------------------------------------------------------------- */

#define STRING_GETTER(fn, key) \
    nvmlReturn_t fn(nvmlDevice_t d, char *v, unsigned int n) { return get_str(dev_of(d), key, v, n); }
STRING_GETTER(nvmlDeviceGetUUID, "uuid")
STRING_GETTER(nvmlDeviceGetSerial, "serial")
STRING_GETTER(nvmlDeviceGetName, "name")
STRING_GETTER(nvmlDeviceGetBoardPartNumber, "board_part_number")
STRING_GETTER(nvmlDeviceGetVbiosVersion, "vbios")
STRING_GETTER(nvmlDeviceGetInforomImageVersion, "inforom")

#define UINT_GETTER(fn, key) \
    nvmlReturn_t fn(nvmlDevice_t d, unsigned int *v) { return get_uint(dev_of(d), key, v); }
UINT_GETTER(nvmlDeviceGetBoardId, "board_id")
UINT_GETTER(nvmlDeviceGetModuleId, "module_id")
UINT_GETTER(nvmlDeviceGetArchitecture, "arch")
UINT_GETTER(nvmlDeviceGetPowerManagementLimit, "power_limit")
UINT_GETTER(nvmlDeviceGetPowerManagementDefaultLimit, "power_default")
UINT_GETTER(nvmlDeviceGetPersistenceMode, "persistence")
UINT_GETTER(nvmlDeviceGetGpuInstanceId, "gi")
UINT_GETTER(nvmlDeviceGetComputeInstanceId, "ci")
UINT_GETTER(nvmlDeviceGetMaxMigDeviceCount, "mig.max_count")

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    long dev = dev_of(d);
    nvmlReturn_t rc = status(dev, "pci");
    if (rc != OK) return rc;
    memset(pci, 0, sizeof *pci);
    get_str(dev, "pci.bus_id", pci->busId, sizeof pci->busId);
    strncpy(pci->busIdLegacy, pci->busId + 4, sizeof pci->busIdLegacy - 1);
    pci->domain = (unsigned int)strtoul(pci->busId, NULL, 16);
    pci->bus = (unsigned int)strtoul(pci->busId + 9, NULL, 16);
    get_uint(dev, "pci.device_id", &pci->pciDeviceId);
    get_uint(dev, "pci.subsystem_id", &pci->pciSubSystemId);
    return OK;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
    nvmlReturn_t rc = get_u64(dev_of(d), "memory_total", &m->total);
    if (rc == OK) { m->free = m->total; m->used = 0; }
    return rc;
}

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t d, int *major, int *minor) {
    unsigned int a = 0, b = 0;
    nvmlReturn_t rc = status(dev_of(d), "capability");
    if (rc != OK) return rc;
    get_uint(dev_of(d), "capability.major", &a);
    get_uint(dev_of(d), "capability.minor", &b);
    *major = (int)a;
    *minor = (int)b;
    return OK;
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t d, unsigned int *lo, unsigned int *hi) {
    nvmlReturn_t rc = get_uint(dev_of(d), "power_max", hi);
    if (rc == OK) *lo = *hi / 4;
    return rc;
}

/* --- health ---------------------------------------------------------------------------- */

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    nvmlReturn_t rc = status(dev_of(d), "mig");
    if (rc != OK) return rc;
    get_uint(dev_of(d), "mig.current", current);
    get_uint(dev_of(d), "mig.pending", pending);
    return OK;
}

nvmlReturn_t nvmlDeviceGetGpuFabricInfoV(nvmlDevice_t d, nvmlGpuFabricInfo_v2_t *info) {
    long dev = dev_of(d);
    unsigned int state = 0;
    nvmlReturn_t rc = status(dev, "fabric");
    if (rc != OK) return rc;
    if (info->version != FABRIC_INFO_V2) return ERR_ARGUMENT_VERSION_MISMATCH;
    memset((char *)info + sizeof info->version, 0xAB, sizeof *info - sizeof info->version);
    get_hex(dev, "fabric.cluster_uuid", info->clusterUuid, sizeof info->clusterUuid);
    get_uint(dev, "fabric.clique_id", &info->cliqueId);
    get_uint(dev, "fabric.state", &state);
    info->state = (unsigned char)state;
    info->status = 0;
    get_uint(dev, "fabric.status", (unsigned int *)&info->status);
    info->healthMask = 0;
    return OK;
}

nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    nvmlReturn_t rc = status(dev_of(d), "ecc");
    if (rc != OK) return rc;
    get_uint(dev_of(d), "ecc.mode_current", current);
    get_uint(dev_of(d), "ecc.mode_pending", pending);
    return OK;
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, int type, int counter, unsigned long long *n) {
    nvmlReturn_t rc = status(dev_of(d), "ecc");
    if (rc != OK) return rc;
    *n = 0;
    if (type == 1) get_u64(dev_of(d), counter == 0 ? "ecc.volatile" : "ecc.aggregate", n);
    return OK;
}

nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t d, unsigned int *corr, unsigned int *unc,
                                       unsigned int *pending, unsigned int *failure) {
    long dev = dev_of(d);
    nvmlReturn_t rc = status(dev, "remapped");
    if (rc != OK) return rc;
    get_uint(dev, "remapped.corrected", corr);
    get_uint(dev, "remapped.uncorrected", unc);
    get_uint(dev, "remapped.pending", pending);
    get_uint(dev, "remapped.failure", failure);
    return OK;
}

/* --- confidential computing ------------------------------------------------------------ */

nvmlReturn_t nvmlDeviceGetConfComputeGpuCertificate(nvmlDevice_t d, nvmlConfComputeGpuCertificate_t *c) {
    nvmlReturn_t rc = status(dev_of(d), "cert");
    if (rc != OK) return rc;
    memset(c, 0, sizeof *c);
    c->attestationCertChainSize =
        get_hex(dev_of(d), "cert", c->attestationCertChain, sizeof c->attestationCertChain);
    return OK;
}

nvmlReturn_t nvmlDeviceGetConfComputeGpuAttestationReport(nvmlDevice_t d,
                                                          nvmlConfComputeGpuAttestationReport_t *r) {
    static const unsigned char spdm_request[4] = {0x11, 0xe0, 0x01, 0xff};
    unsigned int tail;
    nvmlReturn_t rc = status(dev_of(d), "report");
    if (rc != OK) return rc;
    /* The report binds the caller's nonce, exactly as pynvml placed it in the struct. */
    memcpy(r->attestationReport, spdm_request, sizeof spdm_request);
    memcpy(r->attestationReport + 4, r->nonce, sizeof r->nonce);
    tail = get_hex(dev_of(d), "report.tail", r->attestationReport + 36,
                   sizeof r->attestationReport - 36);
    r->attestationReportSize = 36 + tail;
    r->isCecAttestationReportPresent = 0;
    r->cecAttestationReportSize = 0;
    return OK;
}
