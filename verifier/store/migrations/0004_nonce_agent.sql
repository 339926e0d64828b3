-- A nonce is bound to the agent whose challenge carried it (docs/protocol.md §8.1): evidence of
-- any other agent that presents it is refused and does not consume it. Nonces issued before this
-- migration have no agent (NULL) and prove no freshness; they expire within one challenge TTL.
ALTER TABLE nonces ADD COLUMN agent_id TEXT;
