"""The job layer: rows, leases and state transitions (:mod:`.repository`), running a claimed job
(:mod:`.runner`), and adapting engine progress to rows and files (:mod:`.progress`)."""
