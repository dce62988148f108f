"""The agent's kernel work: nftables tables (`nft`), the NFLOG reader (`nflog`: binding,
configuring, one read at a time) and its batched receive (`nflog_receive`: the reads
queued at once, made into records), the messages' layout and parsing (`nflog_messages`),
many messages made into records at once (`nflog_batch`), network namespaces (`netns`).
Imports only `formats` besides itself."""
