"""The UAT image: its operations (build, promote, roll back, freeze: `operations`), who builds it
(`builders`: the local docker engine in `docker_build`, or CodeBuild) and the local registry the
console and tests push to (`registry`)."""
