/* Stand-in for Windows' bcryptprimitives.dll, for wine 8 only (.ci/windows installs it into the
 * wine prefix). Rust's std imports ProcessPrng from it (Windows 10+); wine 8 does not have the
 * DLL, so every Rust program fails to start there. This one fills the buffer from bcrypt.dll's
 * system RNG, which wine has. Never shipped: Windows has the real DLL. */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
