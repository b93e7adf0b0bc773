@echo off
rem windows-node: Windows Setup runs this file (C:\Windows\Setup\Scripts\SetupComplete.cmd) as SYSTEM
rem once it has finished. It only registers and starts the scheduled tasks of the first-boot agent
rem (firstboot.ps1 -Mode Install returns at once), so Setup is not held up; the log is
rem C:\ProgramData\Slipway\firstboot.log.
"%SystemRoot%\System32\WindowsPowerShell\v1.0\powershell.exe" -NoProfile -NonInteractive -ExecutionPolicy Bypass -File "C:\ProgramData\Slipway\firstboot.ps1" -Mode Install
