"""The v2 file upload flow that files_upload_v2 uses: an upload URL, the raw upload, completion."""

from __future__ import annotations

import asyncio
import functools
import mimetypes
import time
from typing import Any

from aiohttp import web

from tests.harness.slack_stub.records import StubFile
from tests.harness.slack_stub.server import BOT_USER_ID, UPLOAD_METHOD, Handler, StubServer
from tests.harness.slack_stub.validation import SlackError, invalid_arguments, missing


class FileMethods(StubServer):
    """files.getUploadURLExternal, the raw upload, files.completeUploadExternal."""

    def _files_get_upload_url_external(self, params: dict[str, Any]) -> dict[str, Any]:
        filename = self._required_param(params, "filename")
        raw_length = self._required_param(params, "length")
        try:
            length = int(raw_length)
        except ValueError:
            length = 0
        if length < 1:
            raise invalid_arguments("length must be a positive integer")
        file_id = f"F{next(self._id_counter):010d}"
        self.files[file_id] = StubFile(id=file_id, name=filename, title=filename, length=length)
        return {"ok": True, "upload_url": f"{self.base_url}upload/{file_id}", "file_id": file_id}

    def _files_complete_upload_external(self, params: dict[str, Any]) -> dict[str, Any]:
        entries = params.get("files")
        if entries is None or entries == "":
            raise missing("files")
        if (
            not isinstance(entries, list)
            or not entries
            or not all(isinstance(e, dict) and isinstance(e.get("id"), str) for e in entries)
        ):
            raise invalid_arguments("files must be a non-empty array of objects with an id")
        completing: list[tuple[StubFile, str]] = []
        for entry in entries:
            stub_file = self.files.get(entry["id"])
            if stub_file is None:
                raise SlackError("file_not_found")
            if stub_file.completed:
                raise invalid_arguments(f"file {stub_file.id} was already completed")
            if not stub_file.uploaded:
                raise invalid_arguments(f"file {stub_file.id} was not uploaded")
            title = entry.get("title")
            completing.append((stub_file, title if isinstance(title, str) and title else ""))
        targets = [self._target(c, write=True).id for c in self._share_targets(params)]
        thread_ts = self._str_param(params, "thread_ts")
        if thread_ts is not None and len(targets) != 1:
            raise invalid_arguments("thread_ts needs exactly one channel")
        roots = {channel: self._thread_root(channel, thread_ts) for channel in targets}

        comment = params.get("initial_comment")
        text = comment if isinstance(comment, str) else ""
        shared = [{"id": f.id, "name": f.name, "title": title or f.name} for f, title in completing]
        files = [stub_file for stub_file, _ in completing]
        if targets:
            # Slack answers before it shares: the share message (and the file's `shares`) can
            # appear later than the answer (https://github.com/slackapi/node-slack-sdk/issues/1865:
            # `shares` missing from the answer at times). `share_delay_s` is that delay here.
            share = functools.partial(self._share, files, shared, text, targets, roots)
            if self.share_delay_s > 0:
                loop = asyncio.get_running_loop()
                self._timers.append(loop.call_later(self.share_delay_s, share))
            else:
                share()
        created = int(time.time())
        answer: list[dict[str, Any]] = []
        for stub_file, title in completing:
            stub_file.title = title or stub_file.name
            stub_file.completed = True
            extension = stub_file.name.rpartition(".")[2].lower() if "." in stub_file.name else ""
            answer.append(
                {
                    "id": stub_file.id,
                    "created": created,
                    "timestamp": created,
                    "name": stub_file.name,
                    "title": stub_file.title,
                    "mimetype": mimetypes.guess_type(stub_file.name)[0]
                    or "application/octet-stream",
                    "filetype": extension or "binary",
                    "user": BOT_USER_ID,
                    "size": len(stub_file.content),
                }
            )
        return {"ok": True, "files": answer}

    def _share(
        self,
        files: list[StubFile],
        shared: list[dict[str, Any]],
        text: str,
        targets: list[str],
        roots: dict[str, str | None],
    ) -> None:
        """Post the message carrying the files in each target (a thread reply under its root)."""
        posted: list[dict[str, Any]] = []
        for channel in targets:
            msg = self._new_message(channel, self._next_ts(), text, None, None, roots[channel])
            msg["files"] = [dict(item) for item in shared]
            self._store_post(msg)
            posted.append(msg)
        for stub_file in files:
            stub_file.channel = posted[0]["channel"]
            stub_file.thread_ts = posted[0]["thread_ts"]
            stub_file.message_ts = posted[0]["ts"]

    def _share_targets(self, params: dict[str, Any]) -> list[str]:
        """``channel_id`` then the comma-separated ``channels``, without duplicates."""
        targets: list[str] = []
        channel_id = self._str_param(params, "channel_id")
        if channel_id is not None:
            targets.append(channel_id)
        channels = params.get("channels")
        if isinstance(channels, str):
            channels = channels.split(",")
        if isinstance(channels, list):
            for channel in channels:
                name = str(channel).strip()
                if name and name not in targets:
                    targets.append(name)
        return targets

    async def _handle_upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if request.content_type == "multipart/form-data":
            form = await request.post()
            part = form.get("file")
            if isinstance(part, web.FileField):
                content = part.file.read()
            elif isinstance(part, (str, bytes, bytearray)):
                content = part.encode() if isinstance(part, str) else bytes(part)
            else:
                content = None
        else:
            content = await request.read()
        stub_file = self.files.get(file_id)
        if stub_file is None:
            return web.Response(status=404, text="Not Found")
        fault = self._take_fault(UPLOAD_METHOD)
        if fault is not None:
            return self._fault_response(fault)
        if content is None:
            return web.Response(status=400, text="missing file field")
        if len(content) > stub_file.length:
            return web.Response(
                status=400, text=f"upload is {len(content)} bytes, declared {stub_file.length}"
            )
        stub_file.content = content
        stub_file.uploaded = True
        return web.Response(status=200, text=f"OK - {len(content)}")

    def _handlers(self) -> dict[str, Handler]:
        return {
            **super()._handlers(),
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "files.completeUploadExternal": self._files_complete_upload_external,
        }

    def _add_routes(self, app: web.Application) -> None:
        super()._add_routes(app)
        app.router.add_post("/upload/{file_id}", self._handle_upload)
