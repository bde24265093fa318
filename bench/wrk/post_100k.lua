-- POSTs a 100 KiB body on every request (the echo app sends it back).
wrk.method = "POST"
wrk.body = string.rep("p", 100 * 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
