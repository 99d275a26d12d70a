/* Test-only stand-in for Windows 10's bcryptprimitives.dll in the wine
 * prefix of `npm run test:platforms`: Rust >= 1.78 binaries import
 * ProcessPrng from it and wine 8 does not have it. Real Windows 10+ does.
 * It fills the buffer from RtlGenRandom (advapi32 SystemFunction036). */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
